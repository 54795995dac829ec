use lb_common::{
    FE_KIND_SHIFT, FrontendValue,
    masquerade_rules::{TRACE_MASQ_ALL, TRACE_MASQ_IN_CLUSTER, TRACE_MASQ_OFF_CLUSTER},
    snat::FE_FLAG_MASQUERADE,
};

use super::*;

fn record(kind: u32, flags: u32, steps: u32) -> TraceRecord {
    TraceRecord {
        steps,
        frontend: FrontendValue {
            flags: kind << FE_KIND_SHIFT | flags,
            ..FrontendValue::default()
        },
        snat_addr_be: u32::from_ne_bytes([192, 168, 0, 2]),
        ..TraceRecord::default()
    }
}

#[test]
fn policy_cluster_names_the_address_and_ports() {
    // TestInternalExternalMasquerade "external to NodePort": masq true.
    let v = view(
        &record(FE_KIND_NODE_PORT, FE_FLAG_MASQUERADE, TRACE_MASQUERADE),
        Entry::External,
        None,
    );
    assert_eq!(v.rule, "external traffic, policy Cluster: masquerade");
    assert_eq!(v.address.as_deref(), Some("192.168.0.2"));
    assert_eq!(v.ports.as_deref(), Some("61000-65535"));
    assert!(!v.applied, "no port recorded");
}

#[test]
fn an_applied_masquerade_names_the_port() {
    let mut r = record(
        FE_KIND_NODE_PORT,
        FE_FLAG_MASQUERADE,
        TRACE_MASQUERADE | TRACE_SNAT_APPLIED,
    );
    r.snat_port_be = 61234u16.to_be();
    let v = view(&r, Entry::External, None);
    assert!(v.applied);
    assert_eq!(v.port, Some(61234));
    assert!(step(&v).contains("192.168.0.2:61234"), "{}", step(&v));
}

#[test]
fn a_local_backend_keeps_the_client_and_says_why() {
    let v = view(
        &record(
            FE_KIND_NODE_PORT,
            FE_FLAG_MASQUERADE,
            TRACE_MASQUERADE | TRACE_SNAT_LOCAL_BACKEND,
        ),
        Entry::External,
        None,
    );
    assert!(!v.applied);
    assert_eq!(v.not_applied_because, Some(LOCAL_BACKEND));
    assert!(step(&v).contains("on this node"), "{}", step(&v));
}

#[test]
fn policy_local_keeps_the_client() {
    // "external to LB with eTP:Local": masq false.
    let v = view(
        &record(FE_KIND_LOAD_BALANCER, 0, 0),
        Entry::External,
        Some(true),
    );
    assert_eq!(
        v.rule,
        "external traffic, policy Local: client address kept"
    );
    assert_eq!((v.address, v.ports), (None, None));
}

#[test]
fn the_socket_path_needs_none() {
    let v = view(&record(FE_KIND_CLUSTER_IP, 0, 0), Entry::Pod, Some(false));
    assert_eq!(v.rule, Masquerade::NotNeeded.rule());
    assert_eq!(step(&v), format!("{}: source kept", v.rule));
}

#[test]
fn a_cluster_ip_from_outside_names_its_rule() {
    // TestInternalExternalMasquerade "external to ClusterIP": masq true with
    // the detector (source outside it), false without one; "masqueradeAll".
    let off = view(
        &record(
            FE_KIND_CLUSTER_IP,
            0,
            TRACE_MASQ_OFF_CLUSTER | TRACE_MASQUERADE,
        ),
        Entry::External,
        Some(false),
    );
    assert_eq!(off.rule, ClusterIpRule::OffCluster.text());
    assert_eq!(off.address.as_deref(), Some("192.168.0.2"));
    let all = view(
        &record(FE_KIND_CLUSTER_IP, 0, TRACE_MASQ_ALL | TRACE_MASQUERADE),
        Entry::External,
        Some(false),
    );
    assert!(all.rule.contains("--masquerade-all"), "{}", all.rule);
    assert!(all.ports.is_some());
    let none = view(
        &record(FE_KIND_CLUSTER_IP, 0, 0),
        Entry::External,
        Some(false),
    );
    assert!(none.rule.contains("no --cluster-cidr"), "{}", none.rule);
    assert_eq!((none.address, none.ports), (None, None));
    // "pod to ClusterIP" from a pod of another node: inside the CIDR, kept.
    let pod = view(
        &record(FE_KIND_CLUSTER_IP, 0, TRACE_MASQ_IN_CLUSTER),
        Entry::External,
        Some(false),
    );
    assert!(pod.rule.contains("inside --cluster-cidr"), "{}", pod.rule);
    assert!(step(&pod).ends_with("source kept"), "{}", step(&pod));
}

#[test]
fn hairpin_and_the_pod_short_circuit_name_their_rules() {
    // TestClusterIPGeneral "hairpin to cluster IP": masq true.
    let hairpin = view(
        &record(FE_KIND_CLUSTER_IP, 0, TRACE_MASQ_HAIRPIN | TRACE_MASQUERADE),
        Entry::External,
        Some(false),
    );
    assert!(hairpin.rule.starts_with("hairpin"), "{}", hairpin.rule);
    assert!(hairpin.address.is_some());
    // "pod to NodePort with eTP:Local": every endpoint, masq false.
    let short = view(
        &record(FE_KIND_NODE_PORT, 0, TRACE_MASQ_POD_SHORT_CIRCUIT),
        Entry::External,
        Some(true),
    );
    assert!(short.rule.contains("short-circuited"), "{}", short.rule);
    assert_eq!(short.ports, None);
}

#[test]
fn the_socket_path_says_where_kube_proxy_would_masquerade() {
    // "node to ClusterIP" with the detector: kube-proxy masquerades; the
    // node's own connection gets its source by route, the same address.
    let node = view(
        &record(FE_KIND_CLUSTER_IP, 0, TRACE_MASQ_OFF_CLUSTER),
        Entry::Node,
        Some(false),
    );
    assert!(!node.applied);
    assert_eq!(
        node.kube_proxy_masquerades,
        Some(ClusterIpRule::OffCluster.text())
    );
    assert_eq!(node.not_applied_because, Some(NODE_SOCKET));
    // "pod to ClusterIP" under --masquerade-all: the pod's address stays.
    let pod = view(
        &record(FE_KIND_CLUSTER_IP, 0, TRACE_MASQ_ALL),
        Entry::Pod,
        Some(false),
    );
    assert_eq!(pod.not_applied_because, Some(POD_SOCKET));
    assert!(
        step(&pod).contains("kube-proxy would masquerade"),
        "{}",
        step(&pod)
    );
    // "pod to NodePort" (policy Cluster): kube-proxy masquerades.
    let np = view(&record(FE_KIND_NODE_PORT, 0, 0), Entry::Pod, Some(false));
    assert_eq!(
        np.kube_proxy_masquerades,
        Some(Masquerade::ToNodeAddress.rule())
    );
    // "pod to NodePort with eTP:Local": it does not; "node to ..." it does.
    let local = view(&record(FE_KIND_NODE_PORT, 0, 0), Entry::Pod, Some(true));
    assert_eq!(local.kube_proxy_masquerades, None);
    let node_local = view(&record(FE_KIND_NODE_PORT, 0, 0), Entry::Node, Some(true));
    assert!(
        node_local
            .kube_proxy_masquerades
            .unwrap()
            .contains("masquerade local traffic")
    );
}
