//! The "to ClusterIP" rows of TestInternalExternalMasquerade
//! (pkg/proxy/nftables/proxier_test.go, iptables the same), whose pods are
//! 10.0.0.0/8 (the detector's CIDR), node 192.168.0.2, external client
//! 203.0.113.2: the masq column of each case.

use super::*;

const POD: u32 = u32::from_be_bytes([10, 0, 0, 2]);
const NODE: u32 = u32::from_be_bytes([192, 168, 0, 2]);
const EXTERNAL: u32 = u32::from_be_bytes([203, 0, 113, 2]);
const PODS: Option<(u32, u8)> = Some((u32::from_be_bytes([10, 0, 0, 0]), 8));

fn rule(rules: MasqueradeRules, src: u32) -> ClusterIpRule {
    rules.cluster_ip(src.to_be())
}

#[test]
fn detector_on_masquerades_what_is_not_from_a_pod() {
    // Base: "pod to ClusterIP" F, "node to ClusterIP" T, "external to ClusterIP" T.
    let rules = MasqueradeRules::new(PODS, false);
    assert_eq!(rule(rules, POD), ClusterIpRule::InCluster);
    assert_eq!(rule(rules, NODE), ClusterIpRule::OffCluster);
    assert_eq!(rule(rules, EXTERNAL), ClusterIpRule::OffCluster);
    assert!(!rule(rules, POD).masquerades());
    assert!(rule(rules, EXTERNAL).masquerades());
}

#[test]
fn no_detector_masquerades_nothing() {
    // "no LocalTrafficDetector": "node to ClusterIP" and "external to ClusterIP" -> F.
    let rules = MasqueradeRules::new(None, false);
    for src in [POD, NODE, EXTERNAL] {
        assert_eq!(rule(rules, src), ClusterIpRule::NoDetector);
        assert!(!rule(rules, src).masquerades());
    }
}

#[test]
fn masquerade_all_masquerades_every_source_with_or_without_detector() {
    // "masqueradeAll" and "masqueradeAll, no LocalTrafficDetector": "pod to ClusterIP" -> T.
    for cidr in [PODS, None] {
        let rules = MasqueradeRules::new(cidr, true);
        for src in [POD, NODE, EXTERNAL] {
            assert_eq!(rule(rules, src), ClusterIpRule::MasqueradeAll);
            assert!(rule(rules, src).masquerades());
        }
    }
}

#[test]
fn the_cidr_is_masked_and_its_edges_hold() {
    let rules = MasqueradeRules::new(Some((u32::from_be_bytes([10, 244, 7, 9]), 16)), false);
    assert_eq!(
        rules.cluster_cidr_be,
        u32::from_be_bytes([10, 244, 0, 0]).to_be()
    );
    let inside = [[10, 244, 0, 0], [10, 244, 255, 255]];
    let outside = [[10, 243, 255, 255], [10, 245, 0, 0]];
    for a in inside {
        assert!(
            rules.in_cluster_cidr(u32::from_be_bytes(a).to_be()),
            "{a:?}"
        );
    }
    for a in outside {
        assert!(
            !rules.in_cluster_cidr(u32::from_be_bytes(a).to_be()),
            "{a:?}"
        );
    }
    let everything = MasqueradeRules::new(Some((0, 0)), false);
    assert!(everything.in_cluster_cidr(EXTERNAL.to_be()));
}

#[test]
fn the_trace_bits_name_the_rule_back() {
    for rule in [
        ClusterIpRule::MasqueradeAll,
        ClusterIpRule::OffCluster,
        ClusterIpRule::InCluster,
        ClusterIpRule::NoDetector,
    ] {
        assert_eq!(ClusterIpRule::from_trace(rule.trace_bit()), rule);
    }
}
