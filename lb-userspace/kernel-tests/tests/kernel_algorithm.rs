//! The balancing algorithm per Service (`lb.kubernetes.io/algorithm`, lb's
//! own: kube-proxy has no such annotation) in the real XDP program under
//! BPF_PROG_TEST_RUN, the maps filled by the real desired state, plan and
//! writer. The rules it keeps are kube-proxy's: its iptables mode picks an
//! endpoint per new connection at random (`-m statistic --mode random
//! --probability 1/n` in KUBE-SVC-...), and conntrack keeps an established
//! connection on its endpoint whatever the rules become (a rule change
//! never moves one).

mod common;

use std::{collections::BTreeMap, net::Ipv4Addr};

use common::*;
use lb::{
    datapath::DatapathMaps as _,
    model::ProblemCode,
    ops::{inspect::Inspector, output},
    plan::Applied,
};
use lb_common::{
    ALGORITHM_MAGLEV,
    algorithm::{ALGORITHM_LEAST_CONNECTIONS, ALGORITHM_RANDOM},
    packet::tcp,
    reason::Reason,
};

const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const NODE_PORT: u16 = 30600;
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn pod(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 6, 10 + i as u8)
}

/// A NodePort Service over `pods` endpoints on this node, with the
/// algorithm annotation `algorithm` (none: `None`) and `extra` spec fields,
/// planned and applied; returns the problems of the desired state.
fn serve(
    t: &mut TestDatapath,
    applied: &mut Applied,
    algorithm: Option<&str>,
    pods: usize,
    extra: &str,
) -> Vec<lb::model::Problem> {
    let annotations = algorithm.map_or(String::new(), |a| {
        format!(", annotations: {{lb.kubernetes.io/algorithm: {a:?}}}")
    });
    let endpoints: Vec<String> = (0..pods)
        .map(|i| format!("{{addresses: [{}], nodeName: node-a}}", pod(i)))
        .collect();
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: balanced, namespace: lb{annotations}}}\nspec: {{type: NodePort, clusterIP: 10.96.0.160, {extra} ports: [{{name: http, port: 80, targetPort: 8080, nodePort: {NODE_PORT}}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: balanced-1, namespace: lb, labels: {{kubernetes.io/service-name: balanced}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{}]\n",
        endpoints.join(", ")
    );
    serve_manifests(&mut t.maps, applied, &yaml, NODE)
}

/// The pod a new connection (a SYN from `sport`) reaches.
fn syn(t: &TestDatapath, sport: u16) -> Ipv4Addr {
    let (action, out) = t.run_xdp(&tcp_frame(CLIENT, sport, NODE, NODE_PORT, true, b""));
    assert_eq!(action, XDP_PASS, "sport {sport}");
    check_frame(&out).dst
}

/// The pod a packet of an established flow (an ACK from `sport`) reaches.
fn ack(t: &TestDatapath, sport: u16) -> Ipv4Addr {
    let frame = tcp_flags_frame(CLIENT, sport, NODE, NODE_PORT, tcp::ACK, b"x");
    let (action, out) = t.run_xdp(&frame);
    assert_eq!(action, XDP_PASS, "sport {sport}");
    check_frame(&out).dst
}

/// New connections per pod, from `count` client ports starting at `first`.
fn spread(t: &TestDatapath, first: u16, count: u16) -> BTreeMap<Ipv4Addr, u32> {
    let mut per_pod = BTreeMap::new();
    for sport in first..first + count {
        *per_pod.entry(syn(t, sport)).or_default() += 1;
    }
    per_pod
}

/// Backend id of each pod, as the writer assigned them.
fn backend_ids(t: &TestDatapath) -> BTreeMap<Ipv4Addr, u32> {
    t.maps
        .backends()
        .unwrap()
        .into_iter()
        .map(|(id, b)| (Ipv4Addr::from(b.addr_be.to_ne_bytes()), id))
        .collect()
}

fn frontend_algorithms(t: &TestDatapath) -> Vec<u8> {
    let mut found: Vec<u8> = t
        .maps
        .frontends()
        .unwrap()
        .iter()
        .map(|(_, v)| v.algorithm())
        .collect();
    found.dedup();
    found
}

/// Upstream: each new connection picks an endpoint (iptables' random
/// probabilities give each of n endpoints 1/n). Over 800 new flows and
/// four endpoints (200 each expected), every algorithm gives every
/// endpoint its share within wide bounds; least-connections keeps them
/// within a few flows of each other (two choices: the gap stays tiny),
/// and its counters hold exactly the flows each backend got.
#[test]
fn every_algorithm_spreads_new_flows_over_every_backend() {
    for (annotation, code) in [
        (None, ALGORITHM_MAGLEV),
        (Some("random"), ALGORITHM_RANDOM),
        (Some("least-connections"), ALGORITHM_LEAST_CONNECTIONS),
    ] {
        let mut t = TestDatapath::load_with(8, 65_536);
        serve(&mut t, &mut Applied::default(), annotation, 4, "");
        assert_eq!(frontend_algorithms(&t), vec![code]);
        let per_pod = spread(&t, 20_000, 800);
        assert_eq!(per_pod.len(), 4, "{annotation:?}: {per_pod:?}");
        for (pod, n) in &per_pod {
            assert!((120..=280).contains(n), "{annotation:?}: {pod} got {n}");
        }
        let ids = backend_ids(&t);
        for (pod, n) in &per_pod {
            assert_eq!(
                t.maps.backend_connections(ids[pod]).unwrap(),
                i64::from(*n),
                "{annotation:?}: the counter of {pod}"
            );
        }
        if code == ALGORITHM_LEAST_CONNECTIONS {
            let (min, max) = (per_pod.values().min(), per_pod.values().max());
            assert!(
                max.unwrap() - min.unwrap() <= 8,
                "two choices keep the gap small: {per_pod:?}"
            );
        }
        assert_eq!(t.stat(Reason::DnatNew), 800);
    }
}

/// Random means a fresh draw per new flow: the same 200 flows sent to two
/// datapaths land differently under random (most of them, with four
/// endpoints: 3/4 expected), and identically under Maglev (the flow's hash
/// decides, the same on every node).
#[test]
fn random_draws_afresh_where_maglev_repeats_itself() {
    let choices = |annotation: Option<&str>| -> Vec<Ipv4Addr> {
        let mut t = TestDatapath::load();
        serve(&mut t, &mut Applied::default(), annotation, 4, "");
        (21_000..21_200).map(|sport| syn(&t, sport)).collect()
    };
    assert_eq!(choices(None), choices(None), "Maglev: the same choices");
    let (a, b) = (choices(Some("random")), choices(Some("random")));
    let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert!(differ > 100, "random: {differ} of 200 differ");
}

/// Least-connections (two random choices, the less loaded wins): a backend
/// holding 100 connections when three empty ones join gets a new flow only
/// when both draws name it (1/16 of the flows: about 19 of 300, where
/// random would give it 75), and the three newcomers share the rest
/// evenly while they catch up.
#[test]
fn least_connections_sends_new_flows_away_from_a_loaded_backend() {
    let mut t = TestDatapath::load_with(8, 65_536);
    let mut applied = Applied::default();
    serve(&mut t, &mut applied, Some("least-connections"), 1, "");
    assert_eq!(spread(&t, 22_000, 100), BTreeMap::from([(pod(0), 100)]));
    let loaded = backend_ids(&t)[&pod(0)];
    assert_eq!(t.maps.backend_connections(loaded).unwrap(), 100);

    serve(&mut t, &mut applied, Some("least-connections"), 4, "");
    assert_eq!(backend_ids(&t)[&pod(0)], loaded, "the backend keeps its id");
    let per_pod = spread(&t, 23_000, 300);
    let to_loaded = per_pod.get(&pod(0)).copied().unwrap_or(0);
    assert!(to_loaded <= 40, "the loaded backend got {to_loaded} of 300");
    let newcomers: Vec<u32> = (1..4).map(|i| per_pod[&pod(i)]).collect();
    let (min, max) = (newcomers.iter().min(), newcomers.iter().max());
    assert!(max.unwrap() - min.unwrap() <= 10, "{per_pod:?}");
    assert_eq!(
        t.maps.backend_connections(loaded).unwrap(),
        100 + i64::from(to_loaded)
    );
}

/// Upstream: conntrack keeps an established connection on its endpoint
/// whatever the rules become. 64 flows opened under Maglev keep their
/// backends, packet after packet, through a switch to random and then to
/// least-connections (each switch rewrites every frontend of the Service),
/// while new flows follow the new algorithm.
#[test]
fn switching_the_algorithm_moves_no_established_flow() {
    let mut t = TestDatapath::load();
    let mut applied = Applied::default();
    serve(&mut t, &mut applied, None, 4, "");
    let opened: Vec<(u16, Ipv4Addr)> = (24_000..24_064).map(|s| (s, syn(&t, s))).collect();
    let used: std::collections::BTreeSet<_> = opened.iter().map(|(_, p)| *p).collect();
    assert_eq!(used.len(), 4, "the flows use every backend");
    for (annotation, code) in [
        ("random", ALGORITHM_RANDOM),
        ("least-connections", ALGORITHM_LEAST_CONNECTIONS),
        ("maglev", ALGORITHM_MAGLEV),
    ] {
        serve(&mut t, &mut applied, Some(annotation), 4, "");
        assert_eq!(frontend_algorithms(&t), vec![code], "{annotation}");
        let established_before = t.stat(Reason::DnatEstablished);
        for (sport, pod) in &opened {
            assert_eq!(ack(&t, *sport), *pod, "{annotation}: flow from {sport}");
        }
        assert_eq!(t.stat(Reason::DnatEstablished) - established_before, 64);
    }
    assert_eq!(t.stat(Reason::DnatNew), 64, "no flow chose again");
    assert_eq!(t.stat(Reason::CtReselected), 0);
}

/// An unknown value is the Service's `unknown-algorithm` problem and the
/// default serves it: its frontends carry Maglev, and its new flows land
/// where Maglev puts them (as on a datapath without the annotation).
/// `lb service list` shows each Service's algorithm.
#[test]
fn an_unknown_algorithm_is_a_problem_and_maglev_serves_it() {
    let mut t = TestDatapath::load();
    let problems = serve(&mut t, &mut Applied::default(), Some("round-robin"), 4, "");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].code, ProblemCode::UnknownAlgorithm);
    assert_eq!(problems[0].object, "Service lb/balanced");
    assert_eq!(frontend_algorithms(&t), vec![ALGORITHM_MAGLEV]);
    let mut plain = TestDatapath::load();
    serve(&mut plain, &mut Applied::default(), None, 4, "");
    for sport in 25_000..25_032 {
        assert_eq!(syn(&t, sport), syn(&plain, sport), "sport {sport}");
    }
    let listed = output::services(
        &Inspector::open(t.dp().maps().unwrap())
            .unwrap()
            .services()
            .unwrap(),
    );
    assert!(
        listed.lines().skip(1).all(|l| l.contains(" maglev ")),
        "{listed}"
    );

    let mut applied = Applied::default();
    let mut lc = TestDatapath::load();
    serve(&mut lc, &mut applied, Some("least-connections"), 2, "");
    let inspector = Inspector::open(lc.dp().maps().unwrap()).unwrap();
    let views = inspector.services().unwrap();
    assert_eq!(views[0].algorithm, "least-connections");
    let listed = output::services(&views);
    let rows: Vec<&str> = listed.lines().collect();
    assert!(rows[0].contains("ALGORITHM"), "{listed}");
    assert_eq!(
        rows.len(),
        4,
        "ClusterIP, NodePort external and internal: {listed}"
    );
    assert!(
        rows[1..].iter().all(|l| l.contains(" least-connections ")),
        "{listed}"
    );
}

/// Upstream: `-m recent --rcheck` comes before the random choice in the
/// Service chain, so ClientIP affinity holds whatever picks the first
/// backend: under random and least-connections, 16 connections of one
/// client all reach the backend its first one reached.
#[test]
fn session_affinity_holds_on_top_of_every_algorithm() {
    for annotation in ["random", "least-connections", "maglev"] {
        let mut t = TestDatapath::load();
        serve(
            &mut t,
            &mut Applied::default(),
            Some(annotation),
            4,
            "sessionAffinity: ClientIP,",
        );
        let first = syn(&t, 26_000);
        for sport in 26_001..26_016 {
            assert_eq!(syn(&t, sport), first, "{annotation}: sport {sport}");
        }
        let entries = t.maps.affinity_entries().unwrap();
        assert_eq!(entries.len(), 1, "{annotation}");
        assert_eq!(entries[0].1.backend_id, backend_ids(&t)[&first]);
    }
}

/// The sweep recounts from the table: closed flows stop counting, so a
/// backend whose connections ended is no longer avoided.
#[test]
fn the_sweep_recounts_live_connections_per_backend() {
    let mut t = TestDatapath::load();
    serve(
        &mut t,
        &mut Applied::default(),
        Some("least-connections"),
        1,
        "",
    );
    for sport in 27_000..27_010 {
        syn(&t, sport);
    }
    let id = backend_ids(&t)[&pod(0)];
    assert_eq!(t.maps.backend_connections(id).unwrap(), 10);
    for sport in 27_000..27_004 {
        let rst = tcp_flags_frame(CLIENT, sport, NODE, NODE_PORT, tcp::RST | tcp::ACK, b"");
        assert_eq!(t.run_xdp(&rst).0, XDP_PASS);
    }
    let now = lb::datapath::kernel::monotonic_s();
    lb::agent::ct_sweep::sweep_once(&mut t.maps, now).unwrap();
    assert_eq!(t.maps.backend_connections(id).unwrap(), 6);
}
