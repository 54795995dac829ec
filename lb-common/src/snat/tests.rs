//! The rows of kube-proxy's packet-flow tests whose source is external
//! (pkg/proxy/nftables/proxier_test.go and iptables/proxier_test.go, the
//! same tables): the masq column of each, for the frontends the XDP path
//! serves. Rows from pods and the node itself take the socket path.

use super::*;
use crate::FE_KIND_CLUSTER_IP;

const CLUSTER: bool = false;
const LOCAL: bool = true;

fn outside(kind: u32, policy_local: bool) -> Masquerade {
    decide(Arrival::FromOutside, kind, policy_local)
}

// TestInternalExternalMasquerade, svc1 (eTP Cluster, iTP Cluster).

#[test]
fn internal_external_masquerade_external_to_node_port() {
    // "external to NodePort": X -> N:3001, masq true.
    assert_eq!(
        outside(FE_KIND_NODE_PORT, CLUSTER),
        Masquerade::ToNodeAddress
    );
}

#[test]
fn internal_external_masquerade_external_to_lb() {
    // "external to LB": X -> 1.2.3.4:80, masq true.
    assert_eq!(
        outside(FE_KIND_LOAD_BALANCER, CLUSTER),
        Masquerade::ToNodeAddress
    );
}

// svc2 (eTP Local).

#[test]
fn internal_external_masquerade_external_to_node_port_with_etp_local() {
    // "external to NodePort with eTP:Local": X -> N:3002, local endpoint, masq false.
    assert_eq!(outside(FE_KIND_NODE_PORT, LOCAL), Masquerade::ClientKept);
}

#[test]
fn internal_external_masquerade_external_to_lb_with_etp_local() {
    // "external to LB with eTP:Local": X -> 5.6.7.8:80, local endpoint, masq false.
    assert_eq!(
        outside(FE_KIND_LOAD_BALANCER, LOCAL),
        Masquerade::ClientKept
    );
}

// svc3 (iTP Local, eTP Cluster): internalTrafficPolicy does not affect
// external frontends.

#[test]
fn internal_external_masquerade_external_to_node_port_with_itp_local() {
    // "external to NodePort with iTP:Local": X -> N:3003, masq true.
    assert_eq!(
        outside(FE_KIND_NODE_PORT, CLUSTER),
        Masquerade::ToNodeAddress
    );
}

#[test]
fn internal_external_masquerade_external_to_lb_with_itp_local() {
    // "external to LB with iTP:Local": X -> 9.10.11.12:80, masq true.
    assert_eq!(
        outside(FE_KIND_LOAD_BALANCER, CLUSTER),
        Masquerade::ToNodeAddress
    );
}

// TestExternalTrafficPolicyCluster / TestExternalTrafficPolicyLocal.

#[test]
fn external_traffic_policy_cluster_external_rows_masqueraded() {
    // "external to external IP hits both endpoints, masqueraded",
    // "external to LB IP hits both endpoints, masqueraded",
    // "external to NodePort hits both endpoints, masqueraded".
    for kind in [
        FE_KIND_EXTERNAL_IP,
        FE_KIND_LOAD_BALANCER,
        FE_KIND_NODE_PORT,
    ] {
        assert_eq!(
            outside(kind, CLUSTER),
            Masquerade::ToNodeAddress,
            "kind {kind}"
        );
    }
}

#[test]
fn external_traffic_policy_local_external_rows_unmasqueraded() {
    // "external to external IP hits only local endpoint, unmasqueraded",
    // "external to LB IP hits only local endpoint, unmasqueraded",
    // "external to NodePort hits only local endpoint, unmasqueraded".
    for kind in [
        FE_KIND_EXTERNAL_IP,
        FE_KIND_LOAD_BALANCER,
        FE_KIND_NODE_PORT,
    ] {
        assert_eq!(outside(kind, LOCAL), Masquerade::ClientKept, "kind {kind}");
    }
}

// TestLoadBalancer (eTP Cluster) and TestNodePorts.

#[test]
fn load_balancer_external_rows_masqueraded() {
    // "external to nodePort", "nodePort bypasses LoadBalancerSourceRanges",
    // "accepted external to LB1" / "LB2": masq true.
    assert_eq!(
        outside(FE_KIND_NODE_PORT, CLUSTER),
        Masquerade::ToNodeAddress
    );
    assert_eq!(
        outside(FE_KIND_LOAD_BALANCER, CLUSTER),
        Masquerade::ToNodeAddress
    );
}

#[test]
fn node_ports_external_to_node_port_masqueraded() {
    // TestNodePorts "external to nodePort": masq true.
    assert_eq!(
        outside(FE_KIND_NODE_PORT, CLUSTER),
        Masquerade::ToNodeAddress
    );
}

#[test]
fn external_to_cluster_ip_is_decided_by_the_cluster_ip_rules() {
    // "external to ClusterIP" (masq true with a detector, false without):
    // per source, `masquerade_rules` (its tests hold the rows), not by the
    // frontend's flag.
    assert_eq!(
        outside(FE_KIND_CLUSTER_IP, CLUSTER),
        Masquerade::ByClusterIpRules
    );
}

#[test]
fn the_socket_path_never_masquerades() {
    for kind in [
        FE_KIND_CLUSTER_IP,
        FE_KIND_NODE_PORT,
        FE_KIND_LOAD_BALANCER,
        FE_KIND_EXTERNAL_IP,
    ] {
        for local in [CLUSTER, LOCAL] {
            assert_eq!(
                decide(Arrival::FromThisNode, kind, local),
                Masquerade::NotNeeded
            );
        }
    }
}

#[test]
fn the_flag_is_what_the_datapath_reads() {
    let mut fe = FrontendValue::default();
    assert!(!masquerades(&fe));
    fe.flags |= FE_FLAG_MASQUERADE;
    assert!(masquerades(&fe));
    // Bit 2, clear of empty-drop (0), source ranges (1), the kind (8..12)
    // and the affinity timeout (12..32).
    assert_eq!(FE_FLAG_MASQUERADE, 4);
    assert_eq!(
        FE_FLAG_MASQUERADE & (crate::FE_KIND_MASK | crate::FE_AFFINITY_MASK),
        0
    );
}
