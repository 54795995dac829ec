//! The two directions of a flow stay consistent: a missing partner entry
//! is restored from the one that is left, and a reply entry is never taken
//! over by another flow that happens to share its key.

mod common;

use std::net::Ipv4Addr;

use common::*;
use lb_common::{
    Ct4Key, Endpoint4, Flow4, PROTO_TCP, SCOPE_EXTERNAL,
    packet::tcp::{ACK, FIN, SYN},
    reason::Reason,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const LB_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 80);
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);

fn ep(addr: Ipv4Addr, port: u16) -> Endpoint4 {
    Endpoint4::new(be32(addr), be16(port))
}

fn service(t: &mut TestDatapath) {
    install_service(
        &mut t.maps,
        frontend_key(NODE, 30080, PROTO_TCP, SCOPE_EXTERNAL),
        1,
        0,
        0,
        &[(1, backend(POD, 8080, PROTO_TCP))],
    );
}

/// The service's backend behind the NodePort and a LoadBalancer IP too,
/// so one client port reaches it by two frontends with one reply key.
fn two_frontends_one_backend() -> TestDatapath {
    let mut t = TestDatapath::load();
    service(&mut t);
    install_service(
        &mut t.maps,
        frontend_key(LB_IP, 80, PROTO_TCP, SCOPE_EXTERNAL),
        1,
        0,
        0,
        &[(1, backend(POD, 8080, PROTO_TCP))],
    );
    t
}

fn original_key(sport: u16) -> Ct4Key {
    Ct4Key::original(Flow4::new(ep(CLIENT, sport), ep(NODE, 30080), PROTO_TCP))
}

fn reply_key(sport: u16) -> Ct4Key {
    Ct4Key::reply(Flow4::new(ep(POD, 8080), ep(CLIENT, sport), PROTO_TCP))
}

/// An LRU eviction or a sweep took the reply entry of an idle connection:
/// the client's next packet (its first of a new second: the partner check
/// runs once a second per direction, `ct/lifecycle.rs`) restores it, and
/// the server's reply is translated again. Within the second it was last
/// seen in, a packet that moves no state does not look.
#[test]
fn a_flow_whose_reply_entry_was_deleted_is_healed_on_its_next_packet() {
    let mut t = TestDatapath::load();
    service(&mut t);
    t.run_xdp(&tcp_flags_frame(CLIENT, 40000, NODE, 30080, SYN, b""));
    assert_eq!(t.maps.remove_connection(&reply_key(40000)).unwrap(), 1);
    let (action, _) = t.run_tc(&tcp_flags_frame(POD, 8080, CLIENT, 40000, SYN | ACK, b""));
    assert_eq!(action, TCX_NEXT);
    assert_eq!(
        t.stat(Reason::PassNoConnection),
        1,
        "broken while the entry is gone"
    );

    // Idle since an earlier second (aged: the entry's stamp moved back).
    t.maps
        .rewrite_connections(|_, v| v.last_seen_s -= 1)
        .unwrap();
    t.run_xdp(&tcp_flags_frame(CLIENT, 40000, NODE, 30080, SYN, b""));
    assert_eq!(t.stat(Reason::CtReplyRestored), 1);
    let restored = t
        .maps
        .connection(&reply_key(40000))
        .unwrap()
        .expect("restored");
    assert_eq!(restored.nat(), ep(NODE, 30080));
    let (_, out) = t.run_tc(&tcp_flags_frame(POD, 8080, CLIENT, 40000, SYN | ACK, b""));
    let p = check_frame(&out);
    assert_eq!((p.src, p.sport), (NODE, 30080));
}

/// The other way round: the original entry went, the server's next packet
/// restores it, so the client's ACKs (which may not open a flow) are
/// translated again instead of passing untranslated.
#[test]
fn a_flow_whose_original_entry_was_deleted_is_healed_by_its_reply() {
    let mut t = TestDatapath::load();
    service(&mut t);
    t.run_xdp(&tcp_flags_frame(CLIENT, 40001, NODE, 30080, SYN, b""));
    t.maps.remove_connection(&original_key(40001)).unwrap();
    t.run_tc(&tcp_flags_frame(POD, 8080, CLIENT, 40001, SYN | ACK, b""));
    assert_eq!(t.stat(Reason::CtOriginalRestored), 1);
    let (_, out) = t.run_xdp(&tcp_flags_frame(CLIENT, 40001, NODE, 30080, ACK, b"x"));
    assert_eq!(check_frame(&out).dst, POD);
    assert_eq!(t.stat(Reason::PassCtNotOpening), 0);
}

/// The same client port reaching the same backend through two frontends
/// (a NodePort and a LoadBalancer IP of one Service) gives both flows one
/// reply key: the first keeps it, the second is refused (counted), and the
/// first flow's replies still carry its own frontend.
#[test]
fn a_reply_entry_clash_does_not_hijack_the_first_flow() {
    let t = two_frontends_one_backend();
    t.run_xdp(&tcp_flags_frame(CLIENT, 40002, NODE, 30080, SYN, b""));
    let before = t.maps.connections().unwrap();

    let (action, _) = t.run_xdp(&tcp_flags_frame(CLIENT, 40002, LB_IP, 80, SYN, b""));
    assert_eq!(action, XDP_DROP);
    assert_eq!(t.stat(Reason::DropCtReplyClash), 1);
    assert_eq!(
        t.maps.connections().unwrap(),
        before,
        "nothing of the first flow changed"
    );

    let (_, out) = t.run_tc(&tcp_flags_frame(POD, 8080, CLIENT, 40002, SYN | ACK, b""));
    let p = check_frame(&out);
    assert_eq!(
        (p.src, p.sport),
        (NODE, 30080),
        "the reply keeps the first flow's frontend"
    );
}

/// A client reuses the port of a closed connection toward another
/// frontend of the same backend (the kernel's ephemeral ports repeat
/// across destinations): the closed flow yields its reply key, as the
/// kernel reopens from TIME_WAIT/CLOSE, and the new connection is
/// translated both ways with its own frontend; the closed flow's late
/// packets no longer rewrite anything.
#[test]
fn a_closed_flow_yields_its_reply_key_to_a_new_connection() {
    let t = two_frontends_one_backend();
    // The first connection, through the NodePort, opened and closed.
    t.run_xdp(&tcp_flags_frame(CLIENT, 40003, NODE, 30080, SYN, b""));
    t.run_tc(&tcp_flags_frame(POD, 8080, CLIENT, 40003, SYN | ACK, b""));
    t.run_xdp(&tcp_flags_frame(CLIENT, 40003, NODE, 30080, ACK, b""));
    t.run_xdp(&tcp_flags_frame(CLIENT, 40003, NODE, 30080, FIN | ACK, b""));
    t.run_tc(&tcp_flags_frame(POD, 8080, CLIENT, 40003, FIN | ACK, b""));

    // The same client port, now to the LoadBalancer IP.
    let (action, out) = t.run_xdp(&tcp_flags_frame(CLIENT, 40003, LB_IP, 80, SYN, b""));
    assert_eq!(action, XDP_PASS);
    assert_eq!(check_frame(&out).dst, POD);
    assert_eq!(t.stat(Reason::DropCtReplyClash), 0);
    assert_eq!(t.stat(Reason::CtReplyTakenOver), 1);
    let (_, out) = t.run_tc(&tcp_flags_frame(POD, 8080, CLIENT, 40003, SYN | ACK, b""));
    let p = check_frame(&out);
    assert_eq!(
        (p.src, p.sport),
        (LB_IP, 80),
        "the reply carries the new frontend"
    );

    // The closed flow's original entry went with it: a late ACK to the
    // NodePort opens nothing and restores nothing.
    let (action, _) = t.run_xdp(&tcp_flags_frame(CLIENT, 40003, NODE, 30080, ACK, b""));
    assert_eq!(action, XDP_PASS);
    assert_eq!(t.stat(Reason::PassCtNotOpening), 1);
    let (_, out) = t.run_tc(&tcp_flags_frame(POD, 8080, CLIENT, 40003, ACK, b""));
    assert_eq!(check_frame(&out).src, LB_IP);
}
