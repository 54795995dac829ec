//! Endpoint choice: `categorize_endpoints` against kube-proxy's own cases
//! (`TestCategorizeEndpoints` in kubernetes/kubernetes,
//! pkg/proxy/topology_test.go), and topology hints through `compute`.
//!
//! Each case carries the upstream case's name verbatim. Upstream's cases
//! give no Service a topology wish, because current kube-proxy trusts any
//! hint; lb asks for one (see `endpoints.rs`), so the cases with zone hints
//! set [`ZONE`], as upstream's older cases set `hintsAnnotation: "auto"`.
//! Left out: the cases for disabled feature gates (`pteEnabled: false`,
//! `hintsEnabled: false`), which are GA here, and "hints annotation ==
//! aUto (wrong capitalization)": lb reads the annotation case-blind.

use std::collections::BTreeSet;

use super::{Categorized, PortPolicy, TopologyWish, categorize_endpoints};
use crate::desired::{slices::Candidate, test_support::*};

const NONE: TopologyWish = TopologyWish {
    zone: false,
    node: false,
};
const ZONE: TopologyWish = TopologyWish {
    zone: true,
    node: false,
};

/// Upstream's `BaseServicePortInfo{}`: both policies Cluster.
const CLUSTER: PortPolicy = PortPolicy {
    internal_local: false,
    external_local: false,
    externally_accessible: false,
};

/// Upstream's `BaseEndpointInfo`: every condition false unless set.
fn endpoint(addr_port: &str) -> Candidate {
    let (addr, port) = addr_port.split_once(':').expect("addr:port");
    Candidate {
        backend: Backend {
            addr: addr.parse().expect("test address"),
            port: port.parse().expect("test port"),
            protocol: Tcp,
        },
        ready: false,
        serving: false,
        terminating: false,
        remote: false,
        local: false,
        target: None,
        zone_hints: Vec::new(),
        node_hints: Vec::new(),
    }
}

fn ready(addr_port: &str) -> Candidate {
    Candidate {
        ready: true,
        ..endpoint(addr_port)
    }
}

fn serving_terminating(addr_port: &str) -> Candidate {
    Candidate {
        serving: true,
        terminating: true,
        ..endpoint(addr_port)
    }
}

fn local(candidate: Candidate) -> Candidate {
    Candidate {
        local: true,
        ..candidate
    }
}

fn zones(candidate: Candidate, zones: &[&str]) -> Candidate {
    Candidate {
        zone_hints: zones.iter().map(|z| z.to_string()).collect(),
        ..candidate
    }
}

/// One row of upstream's table. `all` may be left `None` when only one of
/// `cluster` and `local` is set, as upstream's `allEndpoints`;
/// `only_remote` when there are endpoints anywhere but none reachable.
struct Case {
    upstream: &'static str,
    wish: TopologyWish,
    zone: Option<&'static str>,
    policy: PortPolicy,
    endpoints: Vec<Candidate>,
    cluster: Option<&'static [&'static str]>,
    local: Option<&'static [&'static str]>,
    all: Option<&'static [&'static str]>,
    only_remote: bool,
}

impl Default for Case {
    fn default() -> Case {
        Case {
            upstream: "",
            wish: NONE,
            zone: None,
            policy: CLUSTER,
            endpoints: Vec::new(),
            cluster: None,
            local: None,
            all: None,
            only_remote: false,
        }
    }
}

fn names<'a>(endpoints: impl IntoIterator<Item = &'a Candidate>) -> BTreeSet<String> {
    endpoints
        .into_iter()
        .map(|ep| ep.backend.to_string())
        .collect()
}

fn set(expected: &[&str]) -> BTreeSet<String> {
    expected.iter().map(|s| s.to_string()).collect()
}

fn check(case: &Case) {
    let node = NodeFacts {
        name: "node-a".to_owned(),
        addresses: Vec::new(),
        zone: case.zone.map(str::to_owned),
    };
    let got: Categorized = categorize_endpoints(&case.endpoints, case.policy, case.wish, &node);
    let name = case.upstream;
    let usable =
        |kind: &Option<super::Usable>| kind.as_ref().map(|u| names(u.endpoints.iter().copied()));
    assert_eq!(
        usable(&got.cluster),
        case.cluster.map(set),
        "{name}: cluster"
    );
    assert_eq!(usable(&got.local), case.local.map(set), "{name}: local");
    let all = match (case.cluster, case.local) {
        (Some(cluster), None) => set(cluster),
        (None, Some(local)) => set(local),
        _ => set(case.all.expect("allEndpoints given")),
    };
    assert_eq!(names(got.all_reachable()), all, "{name}: all reachable");
    let has_any = !all.is_empty() || case.only_remote;
    assert_eq!(got.has_any, has_any, "{name}: has any");
}

/// Upstream's four endpoints with zone hints a, b, c, a.
fn zoned_four() -> Vec<Candidate> {
    vec![
        zones(ready("10.1.2.3:80"), &["zone-a"]),
        zones(ready("10.1.2.4:80"), &["zone-b"]),
        zones(ready("10.1.2.5:80"), &["zone-c"]),
        zones(ready("10.1.2.6:80"), &["zone-a"]),
    ]
}

const ALL_FOUR: &[&str] = &["10.1.2.3:80", "10.1.2.4:80", "10.1.2.5:80", "10.1.2.6:80"];

#[test]
fn categorize_endpoints_topology_cases() {
    let cases = [
        Case {
            upstream: "should use topology since all endpoints have hints, node has a zone label and and there are endpoints for the node's zone",
            wish: ZONE,
            zone: Some("zone-a"),
            endpoints: zoned_four(),
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            ..Case::default()
        },
        Case {
            upstream: "hints, hints annotation == disabled, hints ignored",
            wish: NONE,
            zone: Some("zone-a"),
            endpoints: zoned_four(),
            cluster: Some(ALL_FOUR),
            ..Case::default()
        },
        Case {
            upstream: "hints, hints annotation empty, hints ignored",
            wish: NONE,
            zone: Some("zone-a"),
            endpoints: zoned_four(),
            cluster: Some(ALL_FOUR),
            ..Case::default()
        },
        Case {
            upstream: "externalTrafficPolicy: Local, topology ignored for Local endpoints",
            wish: ZONE,
            zone: Some("zone-a"),
            policy: PortPolicy {
                external_local: true,
                externally_accessible: true,
                ..CLUSTER
            },
            endpoints: vec![
                local(zones(ready("10.1.2.3:80"), &["zone-a"])),
                local(zones(ready("10.1.2.4:80"), &["zone-b"])),
                zones(ready("10.1.2.5:80"), &["zone-c"]),
                zones(ready("10.1.2.6:80"), &["zone-a"]),
            ],
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            local: Some(&["10.1.2.3:80", "10.1.2.4:80"]),
            all: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"]),
            ..Case::default()
        },
        Case {
            upstream: "internalTrafficPolicy: Local, topology ignored for Local endpoints",
            wish: ZONE,
            zone: Some("zone-a"),
            policy: PortPolicy {
                internal_local: true,
                externally_accessible: true,
                ..CLUSTER
            },
            endpoints: vec![
                local(zones(ready("10.1.2.3:80"), &["zone-a"])),
                local(zones(ready("10.1.2.4:80"), &["zone-b"])),
                zones(ready("10.1.2.5:80"), &["zone-c"]),
                zones(ready("10.1.2.6:80"), &["zone-a"]),
            ],
            cluster: Some(&["10.1.2.3:80", "10.1.2.6:80"]),
            local: Some(&["10.1.2.3:80", "10.1.2.4:80"]),
            all: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"]),
            ..Case::default()
        },
        Case {
            upstream: "empty node labels",
            wish: ZONE,
            zone: None,
            endpoints: vec![zones(ready("10.1.2.3:80"), &["zone-a"])],
            cluster: Some(&["10.1.2.3:80"]),
            ..Case::default()
        },
        Case {
            upstream: "empty zone label",
            wish: ZONE,
            zone: Some(""),
            endpoints: vec![zones(ready("10.1.2.3:80"), &["zone-a"])],
            cluster: Some(&["10.1.2.3:80"]),
            ..Case::default()
        },
        Case {
            upstream: "node in different zone, no endpoint filtering",
            wish: ZONE,
            zone: Some("zone-b"),
            endpoints: vec![zones(ready("10.1.2.3:80"), &["zone-a"])],
            cluster: Some(&["10.1.2.3:80"]),
            ..Case::default()
        },
        Case {
            upstream: "unready endpoint",
            wish: ZONE,
            zone: Some("zone-a"),
            endpoints: vec![
                zones(ready("10.1.2.3:80"), &["zone-a"]),
                zones(ready("10.1.2.4:80"), &["zone-b"]),
                zones(ready("10.1.2.5:80"), &["zone-c"]),
                zones(endpoint("10.1.2.6:80"), &["zone-a"]),
            ],
            cluster: Some(&["10.1.2.3:80"]),
            ..Case::default()
        },
        Case {
            upstream: "only unready endpoints in same zone (should not filter)",
            wish: ZONE,
            zone: Some("zone-a"),
            endpoints: vec![
                zones(endpoint("10.1.2.3:80"), &["zone-a"]),
                zones(ready("10.1.2.4:80"), &["zone-b"]),
                zones(ready("10.1.2.5:80"), &["zone-c"]),
                zones(endpoint("10.1.2.6:80"), &["zone-a"]),
            ],
            cluster: Some(&["10.1.2.4:80", "10.1.2.5:80"]),
            ..Case::default()
        },
        Case {
            upstream: "missing hints, no filtering applied",
            wish: ZONE,
            zone: Some("zone-a"),
            endpoints: vec![
                zones(ready("10.1.2.3:80"), &["zone-a"]),
                zones(ready("10.1.2.4:80"), &["zone-b"]),
                ready("10.1.2.5:80"),
                zones(ready("10.1.2.6:80"), &["zone-a"]),
            ],
            cluster: Some(ALL_FOUR),
            ..Case::default()
        },
        Case {
            upstream: "multiple hints per endpoint, filtering includes any endpoint with zone included",
            wish: ZONE,
            zone: Some("zone-c"),
            endpoints: vec![
                zones(ready("10.1.2.3:80"), &["zone-a", "zone-b", "zone-c"]),
                zones(ready("10.1.2.4:80"), &["zone-b", "zone-c"]),
                zones(ready("10.1.2.5:80"), &["zone-b", "zone-d"]),
                zones(ready("10.1.2.6:80"), &["zone-c"]),
            ],
            cluster: Some(&["10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"]),
            ..Case::default()
        },
        Case {
            upstream: "conflicting topology and localness require merging allEndpoints",
            wish: ZONE,
            zone: Some("zone-a"),
            policy: PortPolicy {
                external_local: true,
                externally_accessible: true,
                ..CLUSTER
            },
            endpoints: vec![
                local(zones(ready("10.0.0.0:80"), &["zone-a"])),
                local(zones(ready("10.0.0.1:80"), &["zone-b"])),
                zones(ready("10.0.0.2:80"), &["zone-a"]),
                zones(ready("10.0.0.3:80"), &["zone-b"]),
            ],
            cluster: Some(&["10.0.0.0:80", "10.0.0.2:80"]),
            local: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80", "10.0.0.2:80"]),
            ..Case::default()
        },
    ];
    for case in &cases {
        check(case);
    }
}

const ITP_LOCAL: PortPolicy = PortPolicy {
    internal_local: true,
    ..CLUSTER
};
/// `nodePort: 8080` in upstream's cases: the port is externally accessible.
const ITP_LOCAL_NODE_PORT: PortPolicy = PortPolicy {
    internal_local: true,
    external_local: false,
    externally_accessible: true,
};
const ETP_LOCAL_NODE_PORT: PortPolicy = PortPolicy {
    internal_local: false,
    external_local: true,
    externally_accessible: true,
};
const BOTH_LOCAL_NODE_PORT: PortPolicy = PortPolicy {
    internal_local: true,
    external_local: true,
    externally_accessible: true,
};

#[test]
fn categorize_endpoints_traffic_policy_cases() {
    let cases = [
        Case {
            upstream: "internalTrafficPolicy: Local, with empty endpoints",
            policy: ITP_LOCAL,
            local: Some(&[]),
            ..Case::default()
        },
        Case {
            upstream: "internalTrafficPolicy: Local, but all endpoints are remote",
            policy: ITP_LOCAL,
            endpoints: vec![ready("10.0.0.0:80"), ready("10.0.0.1:80")],
            local: Some(&[]),
            only_remote: true,
            ..Case::default()
        },
        Case {
            upstream: "internalTrafficPolicy: Local, all endpoints are local",
            policy: ITP_LOCAL,
            endpoints: vec![local(ready("10.0.0.0:80")), local(ready("10.0.0.1:80"))],
            local: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..Case::default()
        },
        Case {
            upstream: "internalTrafficPolicy: Local, some endpoints are local",
            policy: ITP_LOCAL,
            endpoints: vec![local(ready("10.0.0.0:80")), ready("10.0.0.1:80")],
            local: Some(&["10.0.0.0:80"]),
            ..Case::default()
        },
        Case {
            upstream: "Cluster traffic policy, endpoints not Ready",
            endpoints: vec![endpoint("10.0.0.0:80"), endpoint("10.0.0.1:80")],
            cluster: Some(&[]),
            ..Case::default()
        },
        Case {
            upstream: "Cluster traffic policy, some endpoints are Ready",
            endpoints: vec![endpoint("10.0.0.0:80"), ready("10.0.0.1:80")],
            cluster: Some(&["10.0.0.1:80"]),
            ..Case::default()
        },
        Case {
            upstream: "Cluster traffic policy, all endpoints are terminating",
            endpoints: vec![
                local(serving_terminating("10.0.0.0:80")),
                serving_terminating("10.0.0.1:80"),
            ],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..Case::default()
        },
        Case {
            upstream: "iTP: Local, eTP: Cluster, some endpoints local",
            policy: ITP_LOCAL_NODE_PORT,
            endpoints: vec![local(ready("10.0.0.0:80")), ready("10.0.0.1:80")],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&["10.0.0.0:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..Case::default()
        },
        Case {
            upstream: "iTP: Cluster, eTP: Local, some endpoints local",
            policy: ETP_LOCAL_NODE_PORT,
            endpoints: vec![local(ready("10.0.0.0:80")), ready("10.0.0.1:80")],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&["10.0.0.0:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..Case::default()
        },
        Case {
            upstream: "iTP: Local, eTP: Local, some endpoints local",
            policy: BOTH_LOCAL_NODE_PORT,
            endpoints: vec![local(ready("10.0.0.0:80")), ready("10.0.0.1:80")],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&["10.0.0.0:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..Case::default()
        },
        Case {
            upstream: "iTP: Local, eTP: Local, all endpoints remote",
            policy: BOTH_LOCAL_NODE_PORT,
            endpoints: vec![ready("10.0.0.0:80"), ready("10.0.0.1:80")],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&[]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..Case::default()
        },
        Case {
            upstream: "iTP: Local, eTP: Local, all endpoints remote and terminating",
            policy: BOTH_LOCAL_NODE_PORT,
            endpoints: vec![
                serving_terminating("10.0.0.0:80"),
                serving_terminating("10.0.0.1:80"),
            ],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            local: Some(&[]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            only_remote: true,
            ..Case::default()
        },
        Case {
            upstream: "iTP: Cluster, eTP: Local, with terminating endpoints",
            policy: ETP_LOCAL_NODE_PORT,
            endpoints: vec![
                ready("10.0.0.0:80"),
                local(endpoint("10.0.0.1:80")),
                local(serving_terminating("10.0.0.2:80")),
                serving_terminating("10.0.0.3:80"),
            ],
            cluster: Some(&["10.0.0.0:80"]),
            local: Some(&["10.0.0.2:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.2:80"]),
            ..Case::default()
        },
        Case {
            upstream: "externalTrafficPolicy ignored if not externally accessible",
            policy: PortPolicy {
                external_local: true,
                ..CLUSTER
            },
            endpoints: vec![ready("10.0.0.0:80"), local(ready("10.0.0.1:80"))],
            cluster: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            all: Some(&["10.0.0.0:80", "10.0.0.1:80"]),
            ..Case::default()
        },
        Case {
            upstream: "no cluster endpoints for iTP:Local internal-only service",
            policy: ITP_LOCAL,
            endpoints: vec![ready("10.0.0.0:80"), local(ready("10.0.0.1:80"))],
            local: Some(&["10.0.0.1:80"]),
            all: Some(&["10.0.0.1:80"]),
            ..Case::default()
        },
    ];
    for case in &cases {
        check(case);
    }
}

/// The serving-and-terminating fallback marks what it chose, so a frontend
/// can say its endpoints are going away.
#[test]
fn fallback_is_marked_and_topology_reported() {
    let node = NodeFacts {
        name: "node-a".to_owned(),
        addresses: Vec::new(),
        zone: Some("zone-a".to_owned()),
    };
    let endpoints = vec![serving_terminating("10.0.0.0:80")];
    let got = categorize_endpoints(&endpoints, BOTH_LOCAL_NODE_PORT, NONE, &node);
    assert!(got.cluster.as_ref().is_some_and(|c| c.serving_terminating));
    assert!(got.local.as_ref().is_some_and(|l| !l.serving_terminating));
    assert_eq!(got.topology, None);

    let endpoints = zoned_four();
    let got = categorize_endpoints(&endpoints, CLUSTER, ZONE, &node);
    assert_eq!(got.topology, Some(super::Hint::Zone("zone-a")));
}

#[test]
fn topology_hints_all_or_nothing() {
    let state = desired("topology.yaml", &node("node-a"));
    let zoned = &state.frontends[&fe("10.96.0.90", 80, Tcp, Internal)];
    assert_eq!(
        zoned.endpoints,
        vec![
            ep("10.244.1.90:80", Tcp, true, None),
            ep("10.244.4.90:80", Tcp, false, None)
        ]
    );
    assert_eq!(
        zoned.selection,
        "cluster: 2 ready in zone zone-a by topology hints (of 3 ready)"
    );
    // The port's facts record that hints applied, and only where they did.
    let topology = |name: &str| {
        let key = state.services.keys().find(|k| k.name == name).unwrap();
        state.services[key].topology_aware
    };
    assert!(topology(&zoned.service.name));
    let unhinted = &state.frontends[&fe("10.96.0.91", 80, Tcp, Internal)]
        .service
        .name;
    assert!(!topology(unhinted));
    for (addr, count) in [("10.96.0.91", 2), ("10.96.0.92", 1), ("10.96.0.93", 2)] {
        let spec = &state.frontends[&fe(addr, 80, Tcp, Internal)];
        assert_eq!(spec.endpoints.len(), count, "{addr}");
        assert_eq!(spec.selection, format!("cluster: {count} ready"), "{addr}");
    }
}

#[test]
fn topology_hints_need_a_node_zone() {
    let mut facts = node("node-a");
    facts.zone = None;
    let state = desired("topology.yaml", &facts);
    let zoned = &state.frontends[&fe("10.96.0.90", 80, Tcp, Internal)];
    assert_eq!(zoned.endpoints.len(), 3);
}

#[test]
fn node_hints_for_prefer_same_node() {
    let text = "apiVersion: v1
kind: Service
metadata: {name: near, namespace: topo}
spec:
  clusterIP: 10.96.0.95
  trafficDistribution: PreferSameNode
  ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: near-1
  namespace: topo
  labels: {kubernetes.io/service-name: near}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- addresses: [10.244.1.95]
  nodeName: node-a
  hints: {forNodes: [{name: node-a}], forZones: [{name: zone-a}]}
- addresses: [10.244.4.95]
  nodeName: node-d
  hints: {forNodes: [{name: node-d}], forZones: [{name: zone-a}]}
";
    let set = parse_documents("near.yaml", text);
    let on_a = compute(&set.services, &set.slices, &node("node-a"));
    let spec = &on_a.frontends[&fe("10.96.0.95", 80, Tcp, Internal)];
    assert_eq!(spec.endpoints, vec![ep("10.244.1.95:80", Tcp, true, None)]);
    assert_eq!(
        spec.selection,
        "cluster: 1 ready for node node-a by topology hints (of 2 ready)"
    );
    // No node hint for node-x: the zone hints still apply (both zone-a).
    let on_x = compute(&set.services, &set.slices, &node("node-x"));
    let spec = &on_x.frontends[&fe("10.96.0.95", 80, Tcp, Internal)];
    assert_eq!(spec.endpoints.len(), 2);
    assert_eq!(
        spec.selection,
        "cluster: 2 ready in zone zone-a by topology hints (of 2 ready)"
    );
}
