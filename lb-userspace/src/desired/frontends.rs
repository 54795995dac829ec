//! Frontend expansion: every (address, port, protocol, scope) a Service
//! port claims on this node, each with the endpoint set its scope uses.
//!
//! Which set each scope uses, as kube-proxy does:
//! - a ClusterIP (internal scope): internalTrafficPolicy's set;
//! - a NodePort, LoadBalancer IP or externalIP from outside (external
//!   scope): externalTrafficPolicy's set. Under policy Cluster that is every
//!   ready endpoint of the cluster, remote ones included. This datapath does
//!   not masquerade yet, so a remote endpoint's reply does not come back
//!   through this node's reverse translation and the client cannot use it
//!   (SNAT comes with a later issue);
//! - the same addresses from pods and the node itself (internal scope):
//!   policy Cluster's set even under externalTrafficPolicy=Local.

use std::net::IpAddr;

use k8s_openapi::jiff::Timestamp;

use super::{
    choice::{Choice, cluster_choice, local_choice},
    endpoints::{PortPolicy, categorize_endpoints},
    family,
    ports::PortView,
    services::ServiceView,
    slices::Candidate,
};
use crate::model::{
    Frontend, FrontendKind, FrontendSpec, Listed, NodeFacts, Scope, ServicePortInfo,
};

/// A frontend claimed by a Service port, before conflicts are settled.
pub(super) struct Claim {
    pub(super) frontend: Frontend,
    pub(super) spec: FrontendSpec,
    pub(super) object: String,
    /// The Service's `metadata.creationTimestamp`.
    pub(super) created: Option<Timestamp>,
}

impl ServiceView {
    /// Every frontend of one port, with the endpoint set each scope uses,
    /// and the facts that hold for the whole port.
    pub(super) fn frontends(
        &self,
        port: &PortView,
        candidates: &[Candidate],
        node: &NodeFacts,
    ) -> (Vec<Claim>, ServicePortInfo) {
        let policy = PortPolicy {
            internal_local: self.itp_local,
            external_local: self.etp_local,
            externally_accessible: port.node_port.is_some()
                || !self.lb_ips.is_empty()
                || !self.external_ips.is_empty(),
        };
        let categorized = categorize_endpoints(candidates, policy, self.topology, node);
        let info = ServicePortInfo {
            port: port.port,
            external_policy_local: self.etp_local,
            internal_policy_local: self.itp_local,
            topology_aware: categorized.topology.is_some(),
            listed: candidates
                .iter()
                .map(|c| Listed {
                    backend: c.backend,
                    serving: c.serving,
                })
                .collect(),
        };
        // A set is `None` only where no frontend of this port can use it
        // (upstream's UsesClusterEndpoints and UsesLocalEndpoints read the
        // same facts), so `claim` below never skips a frontend that exists.
        let cluster = categorized
            .cluster
            .as_ref()
            .map(|usable| cluster_choice(usable, &categorized, candidates));
        let local = |field: &str| {
            categorized
                .local
                .as_ref()
                .map(|usable| local_choice(field, usable, &categorized, candidates, node))
        };
        let internal = if self.itp_local {
            local("internalTrafficPolicy")
        } else {
            cluster.clone()
        };
        let external = if self.etp_local {
            local("externalTrafficPolicy")
        } else {
            cluster.clone()
        };
        let internal_external = if self.etp_local {
            cluster
                .as_ref()
                .map(|c| c.with_note("pods and the node bypass externalTrafficPolicy=Local"))
        } else {
            cluster.clone()
        };

        let mut claims = Vec::new();
        let mut claim = |addr, number, scope, kind, choice: &Option<Choice>| {
            if let Some(choice) = choice {
                claims.push(self.claim(port, addr, number, scope, kind, choice));
            }
        };
        for addr in &self.cluster_ips {
            claim(
                *addr,
                port.port,
                Scope::Internal,
                FrontendKind::ClusterIp,
                &internal,
            );
        }
        let node_addrs = node_port_addresses(node);
        for (kind, number, addrs) in [
            (FrontendKind::NodePort, port.node_port, &node_addrs),
            (FrontendKind::LoadBalancer, Some(port.port), &self.lb_ips),
            (
                FrontendKind::ExternalIp,
                Some(port.port),
                &self.external_ips,
            ),
        ] {
            let Some(number) = number else { continue };
            for addr in addrs {
                claim(*addr, number, Scope::External, kind, &external);
                claim(*addr, number, Scope::Internal, kind, &internal_external);
            }
        }
        (claims, info)
    }

    fn claim(
        &self,
        port: &PortView,
        addr: IpAddr,
        number: u16,
        scope: Scope,
        kind: FrontendKind,
        choice: &Choice,
    ) -> Claim {
        Claim {
            frontend: Frontend {
                addr,
                port: number,
                protocol: port.name.protocol,
                scope,
            },
            spec: FrontendSpec {
                service: port.name.clone(),
                kind,
                endpoints: choice.endpoints.clone(),
                when_empty: choice.when_empty,
                selection: choice.selection.clone(),
                affinity_timeout_s: self.affinity_timeout_s,
                algorithm: self.algorithm,
                // Only LoadBalancer IPs are filtered (kube-proxy's
                // firewall chain hangs off the LoadBalancer IP rules).
                source_ranges: if kind == FrontendKind::LoadBalancer {
                    self.source_ranges.clone()
                } else {
                    Vec::new()
                },
            },
            object: self.object.clone(),
            created: self.created,
        }
    }
}

/// The node's served addresses, sorted and deduplicated: NodePorts listen
/// on each.
fn node_port_addresses(node: &NodeFacts) -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = node
        .addresses
        .iter()
        .copied()
        .filter(|addr| family::is_served(*addr))
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

#[cfg(test)]
mod tests {
    use crate::desired::test_support::*;

    #[test]
    fn node_port_with_external_policy_local() {
        let state = desired("nodeport-local.yaml", &node("node-a"));
        let svc = spn("np", "api", "", Tcp);
        let local = ep("10.244.1.5:8080", Tcp, true, Some("api-a"));
        let all = [
            local.clone(),
            ep("10.244.2.5:8080", Tcp, false, Some("api-b1")),
            ep("10.244.2.6:8080", Tcp, false, Some("api-b2")),
        ];
        let expected = BTreeMap::from([
            (
                fe("10.96.0.20", 80, Tcp, Internal),
                spec(&svc, ClusterIp, &all, Reject, "cluster: 3 ready"),
            ),
            (
                fe("192.168.1.10", 30080, Tcp, External),
                spec(
                    &svc,
                    NodePort,
                    &[local],
                    Drop,
                    "externalTrafficPolicy=Local: 1 ready on node-a (of 3)",
                ),
            ),
            (
                fe("192.168.1.10", 30080, Tcp, Internal),
                spec(
                    &svc,
                    NodePort,
                    &all,
                    Reject,
                    "cluster: 3 ready (pods and the node bypass externalTrafficPolicy=Local)",
                ),
            ),
        ]);
        assert_eq!(state.frontends, expected);
        assert_eq!(
            state.services[&svc],
            ServicePortInfo {
                port: 80,
                external_policy_local: true,
                internal_policy_local: false,
                topology_aware: false,
                // Every endpoint the slices list, chosen or not.
                listed: all
                    .iter()
                    .map(|e| crate::model::Listed {
                        backend: e.backend,
                        serving: true,
                    })
                    .collect(),
            }
        );
    }

    #[test]
    fn node_port_local_without_local_endpoint_drops_external_only() {
        let state = desired("nodeport-local.yaml", &node("node-c"));
        let external = &state.frontends[&fe("192.168.1.10", 30080, Tcp, External)];
        assert_eq!(external.endpoints, vec![]);
        assert_eq!(external.when_empty, Drop);
        assert_eq!(
            external.selection,
            "externalTrafficPolicy=Local: no endpoint on node-c (of 3), dropping"
        );
        let internal = &state.frontends[&fe("192.168.1.10", 30080, Tcp, Internal)];
        assert_eq!(internal.endpoints.len(), 3);
        assert!(internal.endpoints.iter().all(|e| !e.local));
    }

    #[test]
    fn node_ports_on_every_node_address() {
        let mut facts = node("node-a");
        facts.addresses = vec![
            Ipv4Addr::new(10, 0, 0, 5).into(),
            Ipv4Addr::new(192, 168, 1, 10).into(),
            Ipv4Addr::new(10, 0, 0, 5).into(),
        ];
        let state = desired("nodeport-local.yaml", &facts);
        let node_ports: Vec<Frontend> = state
            .frontends
            .iter()
            .filter(|(_, s)| s.kind == NodePort)
            .map(|(f, _)| *f)
            .collect();
        assert_eq!(
            node_ports,
            vec![
                fe("10.0.0.5", 30080, Tcp, External),
                fe("10.0.0.5", 30080, Tcp, Internal),
                fe("192.168.1.10", 30080, Tcp, External),
                fe("192.168.1.10", 30080, Tcp, Internal),
            ]
        );
    }

    #[test]
    fn external_ips_follow_external_policy() {
        let state = desired("externalips.yaml", &node("node-a"));
        let svc = spn("ext", "legacy", "tcp", Tcp);
        let local = ep("10.244.1.40:7000", Tcp, true, Some("legacy-0"));
        let all = [
            local.clone(),
            ep("10.244.2.40:7000", Tcp, false, Some("legacy-1")),
        ];
        let expected = BTreeMap::from([
            (
                fe("10.96.0.40", 7000, Tcp, Internal),
                spec(&svc, ClusterIp, &all, Reject, "cluster: 2 ready"),
            ),
            (
                fe("198.51.100.7", 7000, Tcp, External),
                spec(
                    &svc,
                    ExternalIp,
                    &[local],
                    Drop,
                    "externalTrafficPolicy=Local: 1 ready on node-a (of 2)",
                ),
            ),
            (
                fe("198.51.100.7", 7000, Tcp, Internal),
                spec(
                    &svc,
                    ExternalIp,
                    &all,
                    Reject,
                    "cluster: 2 ready (pods and the node bypass externalTrafficPolicy=Local)",
                ),
            ),
        ]);
        assert_eq!(state.frontends, expected);
    }
}
