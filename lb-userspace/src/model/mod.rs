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
/// Service port. Ordered by (addr, port, protocol, scope), as derived
/// (`cmp_addr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
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
/// the same pod port serving two Services is one backend. Ordered by
/// (addr, port, protocol), as derived (`cmp_addr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
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

/// `IpAddr`'s own order (IPv4 before IPv6, then the octets), compared as
/// numbers: the derived order compares the octet arrays through `memcmp`,
/// and the desired state and the plan order every frontend and backend in
/// B-trees (a full sync at 10,000 Services made millions of those calls).
fn cmp_addr(a: &IpAddr, b: &IpAddr) -> std::cmp::Ordering {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.to_bits().cmp(&b.to_bits()),
        (IpAddr::V6(a), IpAddr::V6(b)) => a.to_bits().cmp(&b.to_bits()),
        (IpAddr::V4(_), IpAddr::V6(_)) => std::cmp::Ordering::Less,
        (IpAddr::V6(_), IpAddr::V4(_)) => std::cmp::Ordering::Greater,
    }
}

impl Ord for Frontend {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        cmp_addr(&self.addr, &other.addr)
            .then(self.port.cmp(&other.port))
            .then(self.protocol.cmp(&other.protocol))
            .then(self.scope.cmp(&other.scope))
    }
}

impl PartialOrd for Frontend {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Backend {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        cmp_addr(&self.addr, &other.addr)
            .then(self.port.cmp(&other.port))
            .then(self.protocol.cmp(&other.protocol))
    }
}

impl PartialOrd for Backend {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
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
    use proptest::prelude::*;

    use super::*;

    fn any_addr() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::from(std::net::Ipv4Addr::from(a))),
            // Few distinct values, so equal addresses meet too.
            (0u32..4).prop_map(|a| IpAddr::from(std::net::Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| IpAddr::from(std::net::Ipv6Addr::from(a))),
            (0u128..4).prop_map(|a| IpAddr::from(std::net::Ipv6Addr::from(a))),
        ]
    }

    fn any_protocol() -> impl Strategy<Value = Protocol> {
        prop_oneof![
            Just(Protocol::Tcp),
            Just(Protocol::Udp),
            Just(Protocol::Sctp)
        ]
    }

    proptest! {
        /// Frontends and backends order as the derived order of their
        /// fields would (the B-trees of the desired state and the plan,
        /// and so every printed plan, depend on it).
        #[test]
        fn frontends_and_backends_order_as_their_fields(
            a in (any_addr(), 0u16..3, any_protocol(), any::<bool>()),
            b in (any_addr(), 0u16..3, any_protocol(), any::<bool>()),
        ) {
            let scope = |internal| if internal { Scope::Internal } else { Scope::External };
            let fa = Frontend { addr: a.0, port: a.1, protocol: a.2, scope: scope(a.3) };
            let fb = Frontend { addr: b.0, port: b.1, protocol: b.2, scope: scope(b.3) };
            prop_assert_eq!(fa.cmp(&fb), (a.0, a.1, a.2, scope(a.3)).cmp(&(b.0, b.1, b.2, scope(b.3))));
            prop_assert_eq!(fa.partial_cmp(&fb), Some(fa.cmp(&fb)));
            let ba = Backend { addr: a.0, port: a.1, protocol: a.2 };
            let bb = Backend { addr: b.0, port: b.1, protocol: b.2 };
            prop_assert_eq!(ba.cmp(&bb), (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
            prop_assert_eq!(ba.partial_cmp(&bb), Some(ba.cmp(&bb)));
            prop_assert_eq!(ba.cmp(&bb) == std::cmp::Ordering::Equal, ba == bb);
        }
    }

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
