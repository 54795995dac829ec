//! Re-checking a hit before it is used. A flow whose frontend belongs to
//! another Service now is never followed: its packets are dropped
//! (counted), a SYN chooses again. The backends map holds every endpoint
//! some Service port's EndpointSlices list, whatever its conditions, so a
//! flow whose backend is gone from it (or whose id names another address
//! now) is one whose pod is gone (issue 11: "a hit whose backend is gone
//! ... is re-selected for a new TCP connection (SYN) and dropped or reset
//! for the rest, never sent to an address that may now be someone else's
//! pod"): a packet that may open a flow (a TCP SYN; any UDP datagram, as
//! after kube-proxy's conntrack cleanup, pkg/proxy/conntrack/cleanup.go)
//! chooses again, the others are dropped (`drop_ct_backend_gone`). A
//! terminating or not-ready endpoint, still listed, keeps its established
//! flows ("terminating backends keep their established flows until they
//! are removed") while new connections avoid it.

mod common;

use std::net::Ipv4Addr;

use common::*;
use lb::datapath::DatapathMaps as _;
use lb_common::{
    BE_FLAG_TERMINATING, PROTO_TCP, PROTO_UDP, SCOPE_EXTERNAL,
    packet::tcp::{ACK, SYN},
    reason::Reason,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const POD_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 6);

fn frontend() -> lb_common::Frontend4Key {
    frontend_key(NODE, 30080, PROTO_TCP, SCOPE_EXTERNAL)
}

/// A flow from `sport` established on POD_A (backend id 1).
fn established_on_a(t: &mut TestDatapath, sport: u16) {
    install_service(
        &mut t.maps,
        frontend(),
        1,
        0,
        0,
        &[(1, backend(POD_A, 8080, PROTO_TCP))],
    );
    let (_, out) = t.run_xdp(&tcp_flags_frame(CLIENT, sport, NODE, 30080, SYN, b""));
    assert_eq!(check_frame(&out).dst, POD_A);
}

/// The Service moves wholly to POD_B (id 2), as apply writes it: new
/// backend, new table, frontend flip, then the old backend's removal.
fn move_to_b(t: &mut TestDatapath) {
    install_service(
        &mut t.maps,
        frontend(),
        1,
        1,
        0,
        &[(2, backend(POD_B, 8080, PROTO_TCP))],
    );
    t.maps.remove_backend(1).unwrap();
}

#[test]
fn a_hit_on_a_removed_backend_chooses_again_on_syn_and_drops_established_tcp() {
    let mut t = TestDatapath::load();
    established_on_a(&mut t, 40000);
    move_to_b(&mut t);

    // The established connection's packets are dropped, never sent on to
    // the old address.
    let (action, _) = t.run_xdp(&tcp_flags_frame(CLIENT, 40000, NODE, 30080, ACK, b"data"));
    assert_eq!(action, XDP_DROP);
    assert_eq!(t.stat(Reason::DropCtBackendGone), 1);

    // A new connection on the same tuple (a SYN) chooses again, and its
    // packets follow the new choice.
    let (action, out) = t.run_xdp(&tcp_flags_frame(CLIENT, 40000, NODE, 30080, SYN, b""));
    assert_eq!(action, XDP_PASS);
    assert_eq!(check_frame(&out).dst, POD_B);
    assert_eq!(t.stat(Reason::CtReselected), 1);
    let (_, out) = t.run_xdp(&tcp_flags_frame(CLIENT, 40000, NODE, 30080, ACK, b"data"));
    assert_eq!(check_frame(&out).dst, POD_B);
    // The old flow's reply entry went with it.
    assert!(
        t.maps
            .connections()
            .unwrap()
            .iter()
            .all(|(k, v)| k.backend(v).is_some_and(|b| b.addr_be == be32(POD_B)))
    );
}

/// cleanup.go: UDP flows to a removed endpoint are flushed, so the next
/// datagram is balanced again; here the next datagram chooses again itself,
/// even before the agent's purge.
#[test]
fn a_udp_flow_to_a_removed_backend_chooses_again() {
    let mut t = TestDatapath::load();
    let key = frontend_key(NODE, 30053, PROTO_UDP, SCOPE_EXTERNAL);
    install_service(
        &mut t.maps,
        key,
        1,
        0,
        0,
        &[(1, backend(POD_A, 53, PROTO_UDP))],
    );
    let (_, out) = t.run_xdp(&udp_frame(CLIENT, 50000, NODE, 30053, b"q", true));
    assert_eq!(check_frame(&out).dst, POD_A);
    install_service(
        &mut t.maps,
        key,
        1,
        1,
        0,
        &[(2, backend(POD_B, 53, PROTO_UDP))],
    );
    t.maps.remove_backend(1).unwrap();
    let (_, out) = t.run_xdp(&udp_frame(CLIENT, 50000, NODE, 30053, b"q", true));
    assert_eq!(check_frame(&out).dst, POD_B, "never to the old address");
    assert_eq!(t.stat(Reason::CtReselected), 1);
}

/// A backend id the agent reused for another address is not followed: the
/// established connection's packets are dropped (never sent to the id's
/// new address, nor to the old one, whose pod is gone), and a SYN chooses
/// again.
#[test]
fn a_backend_id_now_naming_another_address_is_not_followed() {
    let mut t = TestDatapath::load();
    established_on_a(&mut t, 40001);
    t.maps
        .set_backend(1, &backend(POD_B, 8080, PROTO_TCP))
        .unwrap();
    let (action, _) = t.run_xdp(&tcp_flags_frame(CLIENT, 40001, NODE, 30080, ACK, b"x"));
    assert_eq!(action, XDP_DROP);
    assert_eq!(t.stat(Reason::DropCtBackendGone), 1);
    let (_, out) = t.run_xdp(&tcp_flags_frame(CLIENT, 40001, NODE, 30080, SYN, b""));
    assert_eq!(check_frame(&out).dst, POD_B);
    assert_eq!(t.stat(Reason::CtReselected), 1);
}

/// A frontend given to another Service port drops the old Service's flows.
#[test]
fn a_frontend_now_of_another_service_drops_the_old_flows() {
    let mut t = TestDatapath::load();
    established_on_a(&mut t, 40002);
    install_service(
        &mut t.maps,
        frontend(),
        9,
        0,
        0,
        &[(1, backend(POD_A, 8080, PROTO_TCP))],
    );
    let (action, _) = t.run_xdp(&tcp_flags_frame(CLIENT, 40002, NODE, 30080, ACK, b"x"));
    assert_eq!(action, XDP_DROP);
    assert_eq!(t.stat(Reason::DropCtStale), 1);
}

/// kube-proxy keeps terminating endpoints' established connections (only
/// new ones avoid them): a backend still in the map, flagged terminating
/// and out of the table, keeps its flows.
#[test]
fn a_terminating_backend_keeps_its_established_flows() {
    let mut t = TestDatapath::load();
    established_on_a(&mut t, 40003);
    let mut terminating = backend(POD_A, 8080, PROTO_TCP);
    terminating.flags = BE_FLAG_TERMINATING;
    t.maps.set_backend(1, &terminating).unwrap();
    install_service(
        &mut t.maps,
        frontend(),
        1,
        1,
        0,
        &[(2, backend(POD_B, 8080, PROTO_TCP))],
    );
    let (_, out) = t.run_xdp(&tcp_flags_frame(CLIENT, 40003, NODE, 30080, ACK, b"x"));
    assert_eq!(check_frame(&out).dst, POD_A);
    assert_eq!(t.stat(Reason::DropCtStale), 0);
    let (_, out) = t.run_xdp(&tcp_flags_frame(CLIENT, 40004, NODE, 30080, SYN, b""));
    assert_eq!(check_frame(&out).dst, POD_B, "new flows avoid it");
}

// Through the real writer: desired -> plan -> apply from EndpointSlices.

const PORT: u16 = 30090;

fn pod(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 246, 1, i)
}

/// A NodePort Service over `endpoints` (pod index, conditions as YAML).
fn manifests(endpoints: &[(u8, &str)]) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|(i, conditions)| {
            format!(
                "{{addresses: [{}], nodeName: node-a, conditions: {{{conditions}}}}}",
                pod(*i)
            )
        })
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: lb}}\nspec: {{type: NodePort, clusterIP: 10.96.0.90, ports: [{{name: http, port: 80, targetPort: 8080, nodePort: {PORT}}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, namespace: lb, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{}]\n",
        endpoints.join(", ")
    )
}

const READY: &str = "ready: true";
const DRAINING: &str = "ready: false, serving: true, terminating: true";
const NOT_READY: &str = "ready: false, serving: false";

fn serve(t: &mut TestDatapath, applied: &mut lb::plan::Applied, endpoints: &[(u8, &str)]) {
    let yaml = manifests(endpoints);
    assert_eq!(serve_manifests(&mut t.maps, applied, &yaml, NODE), vec![]);
}

/// Where a packet with `flags` from `sport` goes (`None`: not passed).
fn send(t: &TestDatapath, sport: u16, flags: u8) -> Option<Ipv4Addr> {
    let (action, out) = t.run_xdp(&tcp_flags_frame(CLIENT, sport, NODE, PORT, flags, b"x"));
    (action == XDP_PASS).then(|| check_frame(&out).dst)
}

/// A client port whose SYN goes to pod `i`, and its flow established.
fn established_on(t: &TestDatapath, i: u8) -> u16 {
    // The other ports' flows stay on their pods, out of the way.
    let sport = (41000..42000)
        .find(|sport| send(t, *sport, SYN) == Some(pod(i)))
        .expect("some client port reaches the pod");
    assert_eq!(send(t, sport, ACK), Some(pod(i)));
    sport
}

/// The issue's test: "a hit on a removed backend re-selects on SYN and
/// does not forward other packets to the old address".
#[test]
fn an_endpoint_removed_from_its_slice_drops_its_flows_and_a_syn_reselects() {
    let mut t = TestDatapath::load();
    let mut applied = lb::plan::Applied::default();
    serve(&mut t, &mut applied, &[(1, READY), (2, READY)]);
    let sport = established_on(&t, 1);
    serve(&mut t, &mut applied, &[(2, READY)]);
    assert_eq!(send(&t, sport, ACK), None, "never to the removed pod");
    assert_eq!(t.stat(Reason::DropCtBackendGone), 1);
    let reselected = t.stat(Reason::CtReselected);
    assert_eq!(send(&t, sport, SYN), Some(pod(2)), "a listed, chosen pod");
    assert_eq!(t.stat(Reason::CtReselected), reselected + 1);
    assert_eq!(send(&t, sport, ACK), Some(pod(2)));
}

/// kube-proxy keeps a terminating endpoint's established connections
/// (conntrack) while new ones go to the ready endpoints (topology.go:
/// serving-terminating endpoints only when none is ready); a not-ready
/// one likewise. Both stay listed, so their backends stay in the map.
#[test]
fn draining_and_not_ready_endpoints_keep_their_flows_while_syns_avoid_them() {
    for conditions in [DRAINING, NOT_READY] {
        let mut t = TestDatapath::load();
        let mut applied = lb::plan::Applied::default();
        serve(&mut t, &mut applied, &[(1, READY), (2, READY), (3, READY)]);
        let sport = established_on(&t, 1);
        serve(
            &mut t,
            &mut applied,
            &[(1, conditions), (2, READY), (3, READY)],
        );
        for _ in 0..3 {
            assert_eq!(send(&t, sport, ACK), Some(pod(1)), "{conditions}");
        }
        assert_eq!(t.stat(Reason::DropCtBackendGone), 0);
        for sport in 43000..43064 {
            let to = send(&t, sport, SYN);
            assert!(
                matches!(to, Some(p) if p == pod(2) || p == pod(3)),
                "{conditions}: {to:?}"
            );
        }
        // Removed at last: its flow goes.
        serve(&mut t, &mut applied, &[(2, READY), (3, READY)]);
        assert_eq!(send(&t, sport, ACK), None, "{conditions}");
        assert_eq!(t.stat(Reason::DropCtBackendGone), 1);
    }
}

/// An endpoint removed, then a new pod listed, whose backend gets the
/// freed id: the old flow's packets are dropped, never sent to the pod
/// that now holds the id.
#[test]
fn a_freed_backend_id_given_to_a_new_pod_does_not_take_the_old_flows() {
    let mut t = TestDatapath::load();
    let mut applied = lb::plan::Applied::default();
    serve(&mut t, &mut applied, &[(1, READY), (2, READY)]);
    let id_of = |t: &TestDatapath, i: u8| {
        let ids = backend_addresses(&t.maps);
        ids.into_iter()
            .find(|(_, addr)| *addr == pod(i))
            .map(|(id, _)| id)
    };
    let old_id = id_of(&t, 1).expect("pod 1 has an id");
    let sport = established_on(&t, 1);
    serve(&mut t, &mut applied, &[(2, READY)]);
    serve(&mut t, &mut applied, &[(2, READY), (9, READY)]);
    assert_eq!(id_of(&t, 9), Some(old_id), "the new pod took the freed id");
    assert_eq!(send(&t, sport, ACK), None, "neither pod 1 nor pod 9");
    assert_eq!(t.stat(Reason::DropCtBackendGone), 1);
}

/// Two UDP NodePort Services, dns (30053) and logs (30054), over pod 1 and
/// pod 2 port 53 (one backend each, shared), dns's pod 2 with `dns_pod_2`
/// conditions.
fn udp_manifests(dns_pod_2: &str) -> String {
    let service = |name: &str, ip: u8, node_port: u16, second: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: lb}}\nspec: {{type: NodePort, clusterIP: 10.96.0.{ip}, ports: [{{name: dns, protocol: UDP, port: 53, targetPort: 53, nodePort: {node_port}}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: lb, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: dns, protocol: UDP, port: 53}}]\nendpoints: [{{addresses: [{}], nodeName: node-a, conditions: {{ready: true}}}}, {{addresses: [{}], nodeName: node-a, conditions: {{{second}}}}}]\n",
            pod(1),
            pod(2)
        )
    };
    format!(
        "{}---\n{}",
        service("dns", 53, 30053, dns_pod_2),
        service("logs", 54, 30054, READY)
    )
}

/// The agent's way: the planner (which knows what each port listed
/// before) over the real desired state, applied by the real writer.
fn plan_and_apply(
    t: &mut TestDatapath,
    planner: &mut lb::plan::Planner,
    applied: &mut lb::plan::Applied,
    yaml: &str,
) -> lb::plan::Plan {
    let set = lb::source::manifests::parse_documents("served.yaml", yaml);
    let facts = lb::model::NodeFacts {
        name: "node-a".into(),
        addresses: vec![NODE.into()],
        zone: None,
    };
    let state = lb::desired::compute(
        &set.services,
        &set.slices,
        &facts,
        &lb::desired::Rules::default(),
        &lb::desired::Holders::default(),
    );
    let all = lb::desired::incremental::Changes::all();
    let plan = planner.plan(&state, &all, applied, t.maps.max_tables());
    assert_eq!(plan.problems, vec![], "{plan}");
    lb::plan::apply(&plan, &mut t.maps, applied).unwrap();
    plan
}

/// Original entries of the UDP flows through `port` to pod `i`.
fn udp_flows(t: &TestDatapath, port: u16, i: u8) -> usize {
    let conns = t.maps.connections().unwrap();
    conns
        .iter()
        .filter(|(k, v)| {
            k.proto == PROTO_UDP
                && k.is_original()
                && k.dst_port_be == port.to_be()
                && v.nat_addr_be == be32(pod(i))
        })
        .count()
}

/// cleanup.go: a UDP Service's conntrack entries "that are not DNATed to"
/// one of its serving endpoints are cleared, whatever the terminating
/// state; per Service: logs, which still has pod 2 serving, keeps its
/// flows to the same pod (one shared backend, which stays in the map).
#[test]
fn udp_flows_of_one_port_to_an_endpoint_that_stopped_serving_it_are_purged() {
    let mut t = TestDatapath::load();
    let mut applied = lb::plan::Applied::default();
    let mut planner = lb::plan::Planner::new();
    plan_and_apply(&mut t, &mut planner, &mut applied, &udp_manifests(READY));
    // Other client ports for logs: one client port to one pod through two
    // frontends would clash on the reply key.
    for sport in 20000..20032u16 {
        t.run_xdp(&udp_frame(CLIENT, sport, NODE, 30053, b"q", true));
        t.run_xdp(&udp_frame(CLIENT, sport + 1000, NODE, 30054, b"q", true));
    }
    let (dns_before, logs_before) = (udp_flows(&t, 30053, 2), udp_flows(&t, 30054, 2));
    assert!(
        dns_before > 0 && logs_before > 0,
        "{dns_before} {logs_before}"
    );

    // Pod 2 stops serving dns (listed: not serving, terminating).
    let not_serving = "ready: false, serving: false, terminating: true";
    let plan = plan_and_apply(
        &mut t,
        &mut planner,
        &mut applied,
        &udp_manifests(not_serving),
    );
    assert_eq!(plan.purge_connections.len(), 1, "{plan}");
    assert!(plan.remove_backends.is_empty(), "{plan}");
    assert_eq!(udp_flows(&t, 30053, 2), 0, "dns's flows to pod 2 purged");
    assert_eq!(udp_flows(&t, 30054, 2), logs_before, "logs' flows stay");
    assert!(backend_addresses(&t.maps).values().any(|a| *a == pod(2)));
    // A purged flow's next datagram is balanced again, to pod 1 only.
    for sport in 20000..20032u16 {
        let (_, out) = t.run_xdp(&udp_frame(CLIENT, sport, NODE, 30053, b"q", true));
        assert_eq!(check_frame(&out).dst, pod(1));
    }
}
