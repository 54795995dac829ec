//! Which frontends masquerade new connections (`FE_FLAG_MASQUERADE`):
//! kube-proxy's decision for the path each frontend serves
//! (`lb_common::snat::decide`), made once per frontend here so that the
//! datapath reads one bit.

use lb_common::snat::{Arrival, Masquerade, decide};

use crate::{
    datapath::codec::kind_code,
    model::{Frontend, FrontendKind, Scope, ServicePortInfo},
};

/// Whether new connections through `frontend` (of `kind`, of the Service
/// port `port`) are masqueraded to the node's address. Only external
/// traffic is: the socket hooks translate at `connect()`.
pub(super) fn masquerades(
    frontend: &Frontend,
    kind: FrontendKind,
    port: Option<&ServicePortInfo>,
) -> bool {
    let arrival = match frontend.scope {
        Scope::External => Arrival::FromOutside,
        Scope::Internal => Arrival::FromThisNode,
    };
    // A port without facts is one the plan cannot place anyway; policy
    // Cluster (the API's default) is what it would have.
    let external_local = port.is_some_and(|port| port.external_policy_local);
    decide(arrival, kind_code(kind), external_local) == Masquerade::ToNodeAddress
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::model::Protocol;

    fn frontend(scope: Scope) -> Frontend {
        Frontend {
            addr: "192.168.0.2".parse::<IpAddr>().unwrap(),
            port: 3001,
            protocol: Protocol::Tcp,
            scope,
        }
    }

    fn port(external_policy_local: bool) -> ServicePortInfo {
        ServicePortInfo {
            port: 80,
            external_policy_local,
            internal_policy_local: false,
            topology_aware: false,
            listed: Vec::new(),
        }
    }

    #[test]
    fn external_frontends_of_policy_cluster_masquerade() {
        // TestInternalExternalMasquerade "external to NodePort" / "external to LB",
        // TestExternalTrafficPolicyCluster "external to external IP ... masqueraded".
        for kind in [
            FrontendKind::NodePort,
            FrontendKind::LoadBalancer,
            FrontendKind::ExternalIp,
        ] {
            assert!(masquerades(
                &frontend(Scope::External),
                kind,
                Some(&port(false))
            ));
        }
    }

    #[test]
    fn external_frontends_of_policy_local_keep_the_client() {
        // "external to NodePort with eTP:Local" / "external to LB with eTP:Local": masq false.
        for kind in [
            FrontendKind::NodePort,
            FrontendKind::LoadBalancer,
            FrontendKind::ExternalIp,
        ] {
            assert!(!masquerades(
                &frontend(Scope::External),
                kind,
                Some(&port(true))
            ));
        }
    }

    #[test]
    fn internal_frontends_never_masquerade() {
        // The socket path: connections start on this node.
        for kind in [FrontendKind::ClusterIp, FrontendKind::NodePort] {
            assert!(!masquerades(
                &frontend(Scope::Internal),
                kind,
                Some(&port(false))
            ));
        }
    }
}
