//! The agent's view of what the datapath should hold, in Kubernetes terms.
//! Pure data: produced by `desired`, consumed by `plan`, `lb` output and
//! `lb trace`. Addresses are family-neutral (`IpAddr`); only
//! `datapath::codec` knows how a family is laid out in the maps.

use std::{collections::BTreeMap, fmt, net::IpAddr, sync::Arc};

use lb_common::{PROTO_SCTP, PROTO_TCP, PROTO_UDP};

mod algorithm;
mod problem;
mod source_range;

pub use algorithm::Algorithm;

pub use problem::{Problem, ProblemCode, Severity};
pub use source_range::SourceRange;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Kubernetes' spelling ("TCP"); `None` for anything else.
    pub fn from_k8s(value: Option<&str>) -> Option<Protocol> {
        match value.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    pub const fn ip_number(self) -> u8 {
        match self {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
            Protocol::Sctp => PROTO_SCTP,
        }
    }

    pub fn from_ip_number(number: u8) -> Option<Protocol> {
        match number {
            PROTO_TCP => Some(Protocol::Tcp),
            PROTO_UDP => Some(Protocol::Udp),
            PROTO_SCTP => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// kube-proxy's ServicePortName: one load-balanced unit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ServicePortName {
    pub namespace: String,
    pub name: String,
    /// The Service port's name; empty for a single unnamed port.
    pub port_name: String,
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    /// `namespace/name:portname` (the port name may be empty), as kube-proxy prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port_name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FrontendKind {
    ClusterIp,
    NodePort,
    LoadBalancer,
    ExternalIp,
}

/// Which traffic a frontend entry serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// From outside the node, seen by XDP on the external devices.
    External,
    /// From the node itself or its pods, seen by the socket hooks.
    Internal,
}

/// One frontend entry: an address and port that, for one scope, leads to a
/// Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Frontend {
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub scope: Scope,
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.addr, self.port, self.protocol)
    }
}

/// A backend as the datapath sees it. Identity is (addr, port, protocol):
/// the same pod port serving two Services is one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Backend {
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.addr, self.port)
    }
}

/// A backend chosen for a frontend, with the facts that explain the choice.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Endpoint {
    pub backend: Backend,
    /// Chosen only because no ready endpoint was available (kube-proxy's
    /// serving-and-terminating fallback).
    pub terminating: bool,
    /// The endpoint is on this node.
    pub local: bool,
    /// The endpoint's slice names another node (neither: no node named).
    pub remote: bool,
    /// Pod or target name from the EndpointSlice, when it names one:
    /// shared with the slice, not copied into each frontend's set.
    pub target: Option<Arc<str>>,
}

/// What happens to new traffic when a frontend has no endpoint to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenEmpty {
    /// The Service has no usable endpoint at all (kube-proxy: REJECT).
    Reject,
    /// Policy Local and no local endpoint (kube-proxy: DROP).
    Drop,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FrontendSpec {
    pub service: ServicePortName,
    pub kind: FrontendKind,
    /// Sorted by backend, no duplicates; may be empty.
    pub endpoints: Vec<Endpoint>,
    pub when_empty: WhenEmpty,
    /// Why this endpoint set (for `lb service list` and `lb trace`), e.g.
    /// "externalTrafficPolicy=Local: 1 of 3 endpoints on node-a".
    pub selection: String,
    /// `sessionAffinity: ClientIP`'s timeout in seconds; 0: no affinity.
    pub affinity_timeout_s: u32,
    /// LoadBalancer IPs only: the sources allowed to open connections
    /// (`loadBalancerSourceRanges`, plus the LoadBalancer IPs themselves
    /// when a range holds a node address: kube-proxy's `allowFromNode`);
    /// empty: every source.
    pub source_ranges: Vec<SourceRange>,
    /// How new flows pick a backend (`lb.kubernetes.io/algorithm`).
    pub algorithm: Algorithm,
}

/// The node's own facts that the desired state depends on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    /// Addresses NodePorts listen on.
    pub addresses: Vec<IpAddr>,
    /// The node's `topology.kubernetes.io/zone` label, if any.
    pub zone: Option<String>,
}

/// Facts about a Service port that hold for all its frontends (written to
/// the datapath's service map for operators).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ServicePortInfo {
    /// The Service port (frontends of kind NodePort listen elsewhere).
    pub port: u16,
    pub external_policy_local: bool,
    pub internal_policy_local: bool,
    /// Topology hints narrowed the cluster-wide endpoints.
    pub topology_aware: bool,
    /// Every endpoint the port's EndpointSlices list, whatever its
    /// conditions, sorted by backend: the backends map holds them all (so
    /// a flow to a draining pod keeps its backend, while one whose pod is
    /// gone finds none), besides the frontends' chosen sets. Not in the
    /// service map.
    #[serde(skip)]
    pub listed: Vec<Listed>,
}

/// An endpoint a Service port's EndpointSlices list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listed {
    pub backend: Backend,
    /// Its `serving` condition (unset: true): kube-proxy's UDP conntrack
    /// cleanup keeps the flows to serving endpoints only.
    pub serving: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub frontends: BTreeMap<Frontend, FrontendSpec>,
    pub services: BTreeMap<ServicePortName, ServicePortInfo>,
    pub problems: Vec<Problem>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_codes_serialize_as_their_str_and_parse_back() {
        for code in ProblemCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(ProblemCode::from_str_code(code.as_str()), Some(code));
        }
        let mut unique: Vec<&str> = ProblemCode::ALL.iter().map(|c| c.as_str()).collect();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ProblemCode::ALL.len());
    }
}
