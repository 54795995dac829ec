use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Node;

use super::{
    error_log::{ErrorLog, Line, REPEAT_EVERY},
    *,
};

/// cmd/kube-proxy/app/server.go: `labels.NewSelector().Add(noProxyName,
/// noHeadlessEndpoints)` prints the requirements sorted by key.
#[test]
fn the_label_selector_is_kube_proxys() {
    assert_eq!(
        selectors::label_selector(None),
        "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name"
    );
    assert_eq!(
        selectors::label_selector(Some("lb")),
        "!service.kubernetes.io/headless,service.kubernetes.io/service-proxy-name=lb"
    );
    assert_eq!(
        selectors::node_field_selector("node-a"),
        "metadata.name=node-a"
    );
}

#[test]
fn a_proxy_name_must_be_a_label_value() {
    for good in ["lb", "my-proxy.v1", "a_b", &"x".repeat(63)] {
        assert!(selectors::check_proxy_name(good).is_ok(), "{good}");
    }
    for bad in ["", "-lb", "lb-", "a,b", "a=b", "a b", &"x".repeat(64)] {
        let err = selectors::check_proxy_name(bad).expect_err(bad);
        assert!(err.contains("--service-proxy-name"), "{err}");
    }
}

fn node(yaml: &str) -> Node {
    serde_saphyr::from_str(yaml).expect("a Node")
}

const NODE: &str = "
metadata:
  name: node-a
  labels: {topology.kubernetes.io/zone: zone-1}
status:
  addresses:
  - {type: Hostname, address: node-a}
  - {type: ExternalIP, address: 203.0.113.9}
  - {type: InternalIP, address: fd00::5}
  - {type: InternalIP, address: 10.0.0.5}
  - {type: InternalIP, address: 10.0.0.6}
";

fn v4(text: &str) -> Ipv4Addr {
    text.parse().expect("an IPv4 address")
}

/// GetNodeHostIPs: InternalIPs first, then ExternalIPs; the first of the
/// family is the primary.
#[test]
fn the_primary_address_is_the_first_internal_ip_of_the_family() {
    assert_eq!(primary_ipv4(&node(NODE)), Some(v4("10.0.0.5")));
    let external_only = node(
        "metadata: {name: b}\nstatus:\n  addresses:\n  - {type: ExternalIP, address: 203.0.113.9}\n",
    );
    assert_eq!(primary_ipv4(&external_only), Some(v4("203.0.113.9")));
    assert_eq!(primary_ipv4(&node("metadata: {name: c}\n")), None);
}

#[test]
fn node_facts_carry_the_name_the_zone_and_the_chosen_addresses() {
    let local = [v4("10.0.0.5"), v4("10.0.0.6"), v4("192.168.7.1")];
    let facts = node_facts(&node(NODE), &NodePortAddresses::All, &local);
    assert_eq!(facts.name, "node-a");
    assert_eq!(facts.zone.as_deref(), Some("zone-1"));
    assert_eq!(facts.addresses, local.map(IpAddr::V4).to_vec());

    let facts = node_facts(&node(NODE), &NodePortAddresses::Primary, &local);
    assert_eq!(facts.addresses, vec![IpAddr::V4(v4("10.0.0.5"))]);
    let unlabelled = node("metadata: {name: b}\n");
    assert_eq!(
        node_facts(&unlabelled, &NodePortAddresses::All, &local).zone,
        None
    );
}

fn parse(values: &[&str]) -> Result<NodePortAddresses, String> {
    NodePortAddresses::parse(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>())
}

/// nodeport_addresses.go: CIDRs of the other family are dropped, none left
/// (or a zero CIDR) matches all; `primary` stands alone (server.go).
#[test]
fn nodeport_addresses_read_as_kube_proxy_reads_them() {
    assert_eq!(parse(&[]), Ok(NodePortAddresses::All));
    assert_eq!(parse(&["fd00::/64"]), Ok(NodePortAddresses::All));
    assert_eq!(parse(&["10.0.0.0/8,0.0.0.0/0"]), Ok(NodePortAddresses::All));
    assert_eq!(parse(&["primary"]), Ok(NodePortAddresses::Primary));
    let cidrs = parse(&["10.0.0.0/24", "fd00::/64,192.168.0.0/16"]).expect("CIDRs");
    let local = [v4("10.0.0.5"), v4("10.0.1.5"), v4("192.168.7.1")];
    assert_eq!(
        cidrs.select(&local, None),
        vec![IpAddr::V4(v4("10.0.0.5")), IpAddr::V4(v4("192.168.7.1"))]
    );
    for bad in [&["primary", "10.0.0.0/8"][..], &["10.0.0.1"], &["eth0"]] {
        let err = parse(bad).expect_err("refused");
        assert!(err.contains("--nodeport-addresses"), "{err}");
    }
}

/// `primary` is `<node IP>/32` over the local addresses: a Node whose
/// primary address is not on this node's interfaces gets no NodePorts.
#[test]
fn primary_selects_nothing_when_the_node_ip_is_not_local() {
    let local = [v4("192.168.7.1")];
    assert!(
        NodePortAddresses::Primary
            .select(&local, Some(v4("10.0.0.5")))
            .is_empty()
    );
    assert!(NodePortAddresses::Primary.select(&local, None).is_empty());
}

fn progress(services: bool, slices: bool, node: bool, present: bool) -> Progress {
    Progress {
        services_listed: services,
        slices_listed: slices,
        node_listed: node,
        node_present: present,
    }
}

/// client-go's WaitForCacheSync before the first sync: until every
/// reflector has listed once nothing may be served (a Service missing from
/// an unfinished list is not deleted); then the Node must exist.
#[test]
fn snapshots_wait_for_every_list_and_the_node() {
    let check = |p| readiness::check(p, "http://api:6443", "node-a");
    let err = check(progress(false, true, false, false)).expect_err("not listed");
    let text = err.to_string();
    assert!(matches!(err, SourceError::NotListed { .. }));
    assert!(text.contains("Services, this node's Node"), "{text}");
    assert!(text.contains("http://api:6443") && text.contains("list and watch"));
    assert!(!text.contains("EndpointSlices,"), "{text}");

    let err = check(progress(true, true, true, false)).expect_err("no node");
    assert!(matches!(err, SourceError::NodeMissing { .. }));
    assert!(err.to_string().contains("\"node-a\"") && err.to_string().contains("--node-name"));

    assert!(check(progress(true, true, true, true)).is_ok());
}

#[test]
fn watch_failures_are_logged_once_a_minute_and_their_end_once() {
    let mut log = ErrorLog::default();
    let start = Instant::now();
    assert_eq!(log.succeeded(), Line::Quiet);
    assert_eq!(log.failed(start), Line::Failed { suppressed: 0 });
    for second in 1..60 {
        assert_eq!(log.failed(start + Duration::from_secs(second)), Line::Quiet);
    }
    assert_eq!(
        log.failed(start + REPEAT_EVERY),
        Line::Failed { suppressed: 59 }
    );
    assert_eq!(log.succeeded(), Line::Recovered { failures: 61 });
    assert_eq!(log.succeeded(), Line::Quiet);
    assert_eq!(
        log.failed(start + REPEAT_EVERY + Duration::from_secs(1)),
        Line::Failed { suppressed: 0 },
        "a new run of failures is reported at once"
    );
}

#[test]
fn standalone_facts_take_the_cidrs_but_not_primary() {
    let node = |addresses: &[&str]| crate::model::NodeFacts {
        name: "node-a".into(),
        addresses: addresses
            .iter()
            .map(|a| a.parse().expect("address"))
            .collect(),
        zone: None,
    };
    let given = node(&["10.0.0.5", "192.168.7.1"]);
    let cidrs = parse(&["192.168.0.0/16"]).expect("CIDR");
    assert_eq!(
        cidrs.filter_configured(given.clone()),
        Ok(node(&["192.168.7.1"]))
    );
    assert_eq!(
        NodePortAddresses::All.filter_configured(given.clone()),
        Ok(given.clone())
    );
    let err = NodePortAddresses::Primary
        .filter_configured(given)
        .expect_err("primary needs the Node");
    assert!(err.contains("--node-address"), "{err}");
}
