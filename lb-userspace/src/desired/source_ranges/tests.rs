use crate::desired::test_support::*;

fn service(ranges: &str, kind: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: a}}\nspec: {{type: {kind}, clusterIP: 10.96.0.9, loadBalancerSourceRanges: {ranges}, ports: [{{port: 80, nodePort: 30080}}]}}\nstatus: {{loadBalancer: {{ingress: [{{ip: 192.0.2.9}}]}}}}\n"
    )
}

/// The ranges of each frontend kind, and the problems.
fn ranges_by_kind(
    ranges: &str,
    kind: &str,
    node: &NodeFacts,
) -> (BTreeMap<FrontendKind, BTreeSet<String>>, Vec<Problem>) {
    let set = parse_documents("a.yaml", &service(ranges, kind));
    let state = compute(&set.services, &set.slices, node);
    let mut found: BTreeMap<FrontendKind, BTreeSet<String>> = BTreeMap::new();
    for spec in state.frontends.values() {
        let names = spec.source_ranges.iter().map(ToString::to_string);
        found.entry(spec.kind).or_default().extend(names);
    }
    (found, state.problems)
}

fn strings(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn node_at(addr: [u8; 4]) -> NodeFacts {
    let mut facts = node("node-a");
    facts.addresses = vec![Ipv4Addr::from(addr).into()];
    facts
}

/// Upstream: `MapCIDRsByIPFamily` trims each entry (`strings.TrimSpace`)
/// and parses it with `ParseCIDRSloppy` (leading zeros decimal, host bits
/// cleared); the firewall chain hangs off the LoadBalancer IP rules only,
/// so the NodePort and the ClusterIP of the Service are not filtered.
#[test]
fn trimmed_entries_filter_load_balancer_ips_only() {
    let ranges = r#"[" 203.0.113.0/25 ", "\t198.051.100.7/24\n"]"#;
    let (found, problems) = ranges_by_kind(ranges, "LoadBalancer", &node_at([10, 0, 0, 5]));
    assert_eq!(problems, vec![]);
    assert_eq!(
        found[&LoadBalancer],
        strings(&["198.51.100.0/24", "203.0.113.0/25"])
    );
    assert_eq!(found[&NodePort], BTreeSet::new());
    assert_eq!(found[&ClusterIp], BTreeSet::new());
}

/// Upstream: an invalid entry is logged ("Invalid CIDR ignored") and
/// skipped, the others still filter; an empty one is skipped quietly.
/// The API server would have refused it: a problem of the Service here.
#[test]
fn an_invalid_entry_is_a_problem_and_the_rest_still_filter() {
    let ranges = r#"["203.0.113.0/24", "203.0.113.300/24", "", "10.0.0.0/33"]"#;
    let (found, problems) = ranges_by_kind(ranges, "LoadBalancer", &node_at([10, 0, 0, 5]));
    assert_eq!(found[&LoadBalancer], strings(&["203.0.113.0/24"]));
    let codes: Vec<ProblemCode> = problems.iter().map(|p| p.code).collect();
    assert_eq!(codes, vec![ProblemCode::InvalidValue; 2]);
    assert!(
        problems[0].reason.contains("203.0.113.300/24"),
        "{problems:?}"
    );
}

/// Upstream: the ranges are mapped by family and the IPv4 proxier keeps
/// the IPv4 ones; when none is left (`len(LoadBalancerSourceRanges()) ==
/// 0`) there is no firewall chain and every source is allowed.
#[test]
fn other_family_entries_are_ignored_and_none_left_means_unfiltered() {
    let (found, problems) = ranges_by_kind(
        r#"["2001:db8::/32", "203.0.113.0/24"]"#,
        "LoadBalancer",
        &node_at([10, 0, 0, 5]),
    );
    assert_eq!(problems, vec![]);
    assert_eq!(found[&LoadBalancer], strings(&["203.0.113.0/24"]));
    let (found, _) = ranges_by_kind(r#"["2001:db8::/32", "bad"]"#, "LoadBalancer", &node("n"));
    assert_eq!(found[&LoadBalancer], BTreeSet::new());
}

/// Upstream `allowFromNode`: when a range holds the node's IP, the
/// LoadBalancer IPs are allowed as sources too (a VIP the node holds
/// loops back with itself as the source); otherwise the node is filtered
/// as any other source.
#[test]
fn a_range_holding_the_node_allows_the_load_balancer_ip_as_source() {
    let ranges = r#"["10.0.0.0/8"]"#;
    let (inside, _) = ranges_by_kind(ranges, "LoadBalancer", &node_at([10, 0, 0, 5]));
    assert_eq!(
        inside[&LoadBalancer],
        strings(&["10.0.0.0/8", "192.0.2.9/32"])
    );
    let (outside, _) = ranges_by_kind(ranges, "LoadBalancer", &node_at([172, 16, 0, 5]));
    assert_eq!(outside[&LoadBalancer], strings(&["10.0.0.0/8"]));
}

/// The API server refuses the field on other types ("may only be used
/// when `type` is 'LoadBalancer'"); kube-proxy has no LoadBalancer IP to
/// filter then. A warning, nothing filtered.
#[test]
fn ranges_on_a_node_port_service_are_ignored_with_a_warning() {
    let (found, problems) = ranges_by_kind(r#"["10.0.0.0/8"]"#, "NodePort", &node("n"));
    assert!(found.values().all(BTreeSet::is_empty));
    assert_eq!(problems[0].code, ProblemCode::IgnoredField);
}
