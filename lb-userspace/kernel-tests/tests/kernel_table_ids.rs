//! Maglev table ids per Service port, in the real XDP program under
//! BPF_PROG_TEST_RUN with the maps filled by the real plan and writer: a
//! changed backend set is rewritten in place at its Service port's id
//! (the next packet selects from the new table), two Services over the
//! same backends have a table each, and an agent restarted on the pins of
//! the version that shared one table between such Services keeps every
//! established flow and never rewrites the shared table under the other
//! Service's packets.

mod common;

use std::net::Ipv4Addr;

use common::*;
use lb::{
    datapath::{Datapath, DatapathMaps as _, LoadOptions},
    plan::Applied,
};
use lb_common::{PROTO_TCP, SCOPE_EXTERNAL, flow_hash::flow_hash4_seeded, packet::tcp::ACK};

const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
const ALPHA: u16 = 30710;
const BETA: u16 = 30711;

fn pod(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 246, 0, i as u8 + 1)
}

/// NodePort Services alpha and beta over the endpoints `alpha` and `beta`
/// (indexes), as manifests.
fn manifests(alpha: &[usize], beta: &[usize]) -> String {
    let service = |name: &str, ip: u8, node_port: u16, pods: &[usize]| {
        let endpoints: Vec<String> = pods
            .iter()
            .map(|i| format!("{{addresses: [{}], nodeName: node-a}}", pod(*i)))
            .collect();
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: lb}}\nspec: {{type: NodePort, clusterIP: 10.96.0.{ip}, ports: [{{name: http, port: 80, targetPort: 8080, nodePort: {node_port}}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: lb, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{}]\n",
            endpoints.join(", ")
        )
    };
    format!(
        "{}---\n{}",
        service("alpha", 171, ALPHA, alpha),
        service("beta", 172, BETA, beta)
    )
}

fn serve(t: &mut TestDatapath, applied: &mut Applied, alpha: &[usize], beta: &[usize]) {
    let yaml = manifests(alpha, beta);
    assert_eq!(serve_manifests(&mut t.maps, applied, &yaml, NODE), vec![]);
}

/// The external NodePort frontend's value.
fn frontend(t: &TestDatapath, port: u16) -> lb_common::FrontendValue {
    let key = frontend_key(NODE, port, PROTO_TCP, SCOPE_EXTERNAL);
    let frontends = t.maps.frontends().unwrap();
    frontends.iter().find(|(k, _)| *k == key).unwrap().1
}

/// Where a SYN from `sport` to `port` goes (`None`: not passed).
fn syn(t: &TestDatapath, port: u16, sport: u16) -> Option<Ipv4Addr> {
    let (action, out) = t.run_xdp(&tcp_frame(CLIENT, sport, NODE, port, true, b""));
    (action == XDP_PASS).then(|| check_frame(&out).dst)
}

/// Where the next packet of an open flow goes.
fn ack(t: &TestDatapath, port: u16, sport: u16) -> Option<Ipv4Addr> {
    let frame = tcp_flags_frame(CLIENT, sport, NODE, port, ACK, b"x");
    let (action, out) = t.run_xdp(&frame);
    (action == XDP_PASS).then(|| check_frame(&out).dst)
}

/// Where the table `table_id` sends a new flow from `sport` to `port`.
fn table_says(t: &TestDatapath, table_id: u32, port: u16, sport: u16) -> Ipv4Addr {
    let table = t.maps.read_table(table_id).unwrap();
    let ids = backend_addresses(&t.maps);
    let hash = flow_hash4_seeded(
        0,
        be32(CLIENT),
        be32(NODE),
        be16(sport),
        be16(port),
        PROTO_TCP,
    );
    ids[&table[(hash % table.len() as u32) as usize]]
}

/// Forgets every flow, so the next SYNs select afresh.
fn forget_flows(t: &mut TestDatapath) {
    for (key, _) in t.maps.connections().unwrap() {
        t.maps.remove_connection(&key).unwrap();
    }
}

/// A Service whose endpoints change keeps its table id: the new table is
/// swapped in at that id, and the very next new flow selects from it
/// (never the removed pod), with no flip of the frontend when the count
/// stays (kube-proxy's rules for a changed endpoint set: every new
/// connection after the sync goes to the new set).
#[test]
fn a_changed_backend_set_keeps_its_table_id_and_serves_the_next_packet() {
    let mut t = TestDatapath::load();
    let mut applied = Applied::default();
    serve(&mut t, &mut applied, &[0, 1, 2], &[5]);
    let before = frontend(&t, ALPHA);
    serve(&mut t, &mut applied, &[0, 1, 3], &[5]);
    let after = frontend(&t, ALPHA);
    assert_eq!(after.table_id, before.table_id, "the same id");
    assert_eq!(after, before, "no flip: same id, same count");
    for sport in 41_000..41_200 {
        let dst = syn(&t, ALPHA, sport).expect("passed");
        assert_eq!(dst, table_says(&t, after.table_id, ALPHA, sport), "{sport}");
        assert_ne!(dst, pod(2), "the removed pod, sport {sport}");
    }
    // And again to two backends: the count changes, the id does not.
    forget_flows(&mut t);
    serve(&mut t, &mut applied, &[0, 3], &[5]);
    let two = frontend(&t, ALPHA);
    assert_eq!((two.table_id, two.backend_count), (before.table_id, 2));
    for sport in 41_000..41_100 {
        let dst = syn(&t, ALPHA, sport).expect("passed");
        assert!(dst == pod(0) || dst == pod(3), "{sport}: {dst}");
    }
}

/// Two Services over the same pods have two tables: a change of one
/// rewrites only its own, and the other's new flows select exactly as
/// before.
#[test]
fn two_services_with_the_same_backends_have_two_table_ids() {
    let mut t = TestDatapath::load();
    let mut applied = Applied::default();
    serve(&mut t, &mut applied, &[0, 1, 2], &[0, 1, 2]);
    let (alpha, beta) = (frontend(&t, ALPHA), frontend(&t, BETA));
    assert_ne!(alpha.table_id, beta.table_id);
    let beta_table = t.maps.read_table(beta.table_id).unwrap();
    let beta_before: Vec<_> = (42_000..42_100).map(|s| syn(&t, BETA, s)).collect();
    forget_flows(&mut t);
    serve(&mut t, &mut applied, &[0, 1], &[0, 1, 2]);
    assert_eq!(t.maps.read_table(beta.table_id).unwrap(), beta_table);
    let beta_after: Vec<_> = (42_000..42_100).map(|s| syn(&t, BETA, s)).collect();
    assert_eq!(beta_after, beta_before);
    assert!((42_000..42_100).all(|s| syn(&t, ALPHA, s) != Some(pod(2))));
}

/// The version before table ids per Service port shared one table between
/// Services with the same backends. An agent restarted on its pins (the
/// same maps, new programs swapped in) whose first plan also changes one
/// of the two Services: the shared table is never rewritten (the other
/// Service's packets read it until its frontend flips), each Service gets
/// a table of its own, beta's with the shared contents (its new flows
/// keep their backends), established flows of both keep theirs, and the
/// shared id is given back one plan later.
#[test]
fn a_restart_on_shared_tables_keeps_every_flow_and_never_rewrites_them() {
    let mut t = TestDatapath::load();
    let mut applied = Applied::default();
    serve(&mut t, &mut applied, &[0, 1, 2], &[0, 1, 2]);
    // The older layout: beta's frontends on alpha's table, beta's gone.
    let (alpha, beta) = (frontend(&t, ALPHA), frontend(&t, BETA));
    let shared = alpha.table_id;
    let beta_service = beta.service_id;
    for (key, mut value) in t.maps.frontends().unwrap() {
        if value.service_id == beta_service && value.backend_count > 0 {
            value.table_id = shared;
            t.maps.set_frontend(&key, &value).unwrap();
        }
    }
    t.maps.release_table(beta.table_id).unwrap();
    let shared_table = t.maps.read_table(shared).unwrap();
    // Established flows on both (other client ports for beta: one client
    // port to one pod through two frontends is a reply-key clash), and
    // where new flows went.
    let beta_port = |sport: u16| sport + 500;
    let open: Vec<(u16, Option<Ipv4Addr>, Option<Ipv4Addr>)> = (43_000..43_064)
        .map(|s| (s, syn(&t, ALPHA, s), syn(&t, BETA, beta_port(s))))
        .collect();
    assert!(open.iter().all(|(_, a, b)| a.is_some() && b.is_some()));
    let beta_new: Vec<Ipv4Addr> = (44_000..44_100)
        .map(|s| table_says(&t, shared, BETA, s))
        .collect();

    // The restart: the agent goes, a new one loads over the pins.
    drop(t.dp.take());
    let dp = Datapath::load(&LoadOptions {
        pin_dir: Some(t.pin_dir.clone()),
        max_tables: 8,
        ct_entries: 4096,
        ..LoadOptions::default()
    })
    .expect("reloading over the pins");
    t.maps = dp.maps().unwrap();
    t.dp = Some(dp);
    let mut restarted = Applied::read(&t.maps).unwrap();
    serve(&mut t, &mut restarted, &[0, 1, 3], &[0, 1, 2]);

    let (alpha, beta) = (frontend(&t, ALPHA), frontend(&t, BETA));
    assert_ne!(alpha.table_id, shared, "alpha has a table of its own");
    assert_ne!(beta.table_id, shared, "so has beta");
    assert_eq!(t.maps.read_table(beta.table_id).unwrap(), shared_table);
    for (sport, to_alpha, to_beta) in &open {
        assert_eq!(ack(&t, ALPHA, *sport), *to_alpha, "alpha flow {sport}");
        let beta_sport = beta_port(*sport);
        assert_eq!(
            ack(&t, BETA, beta_sport),
            *to_beta,
            "beta flow {beta_sport}"
        );
    }
    for (sport, expected) in (44_000..44_100).zip(&beta_new) {
        assert_eq!(syn(&t, BETA, sport), Some(*expected), "beta new {sport}");
    }
    for sport in 45_000..45_100 {
        let dst = syn(&t, ALPHA, sport).expect("passed");
        assert_eq!(dst, table_says(&t, alpha.table_id, ALPHA, sport));
        assert_ne!(dst, pod(2), "alpha new {sport}");
    }
    // One plan later, nothing references the shared id: it is released.
    assert_eq!(
        t.maps.read_table(shared).unwrap(),
        shared_table,
        "kept a plan"
    );
    serve(&mut t, &mut restarted, &[0, 1, 3], &[0, 1, 2]);
    assert_eq!(t.maps.read_table(shared).unwrap(), Vec::<u32>::new());
}
