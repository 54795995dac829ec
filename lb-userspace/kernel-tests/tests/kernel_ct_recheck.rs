//! Re-checking a hit before it is used. A flow whose frontend belongs to
//! another Service now is never followed: its packets are dropped
//! (counted), a SYN chooses again. A flow whose backend is gone (or whose
//! id names another address now) chooses again on a packet that may open a
//! flow (a TCP SYN; any UDP datagram, as after kube-proxy's conntrack
//! cleanup of UDP flows to removed endpoints, pkg/proxy/conntrack/cleanup.go),
//! while an established TCP connection keeps the address its entry holds,
//! as kube-proxy's conntrack keeps it (a draining pod leaves the backends
//! map while other pods are ready). A terminating backend keeps its
//! established flows.

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
fn a_hit_on_a_removed_backend_chooses_again_on_syn_and_keeps_established_tcp() {
    let mut t = TestDatapath::load();
    established_on_a(&mut t, 40000);
    move_to_b(&mut t);

    // The established connection's packets keep their backend (conntrack).
    let (_, out) = t.run_xdp(&tcp_flags_frame(CLIENT, 40000, NODE, 30080, ACK, b"data"));
    assert_eq!(check_frame(&out).dst, POD_A);

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
/// established connection's packets keep the address its entry holds
/// (never the id's new one), as if its backend were gone, and a SYN
/// chooses again.
#[test]
fn a_backend_id_now_naming_another_address_is_not_followed() {
    let mut t = TestDatapath::load();
    established_on_a(&mut t, 40001);
    t.maps
        .set_backend(1, &backend(POD_B, 8080, PROTO_TCP))
        .unwrap();
    let (_, out) = t.run_xdp(&tcp_flags_frame(CLIENT, 40001, NODE, 30080, ACK, b"x"));
    assert_eq!(check_frame(&out).dst, POD_A);
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
