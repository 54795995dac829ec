//! The connection table's lifecycle through the real programs: states move
//! with the packets (the kernel's nf_conntrack TCP states: SYN_SENT,
//! SYN_RECV, ESTABLISHED once the client's ACK completes the handshake), an
//! assured flow moves to its own table, and the agent's sweep removes what
//! expired (entries aged by rewriting their timestamps, not by sleeping).

mod common;

use std::net::Ipv4Addr;

use common::*;
use lb::{agent::ct_sweep::sweep_once, datapath::kernel::monotonic_s};
use lb_common::{
    ct::{CT_CLOSED, CT_ESTABLISHED, CT_SYN_RECV, CT_SYN_SENT, CT_UNREPLIED, TIMEOUT_UDP_S},
    packet::tcp::{ACK, FIN, RST, SYN},
    reason::Reason,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);

fn services(t: &mut TestDatapath) {
    tcp_and_udp_node_ports(t, NODE, POD);
}

/// (entries in the assured table, entries in the new-flow table).
fn tables(t: &TestDatapath) -> (u64, u64) {
    let fill = t.maps.fill().unwrap();
    let of = |name| fill.iter().find(|f| f.map == name).unwrap().entries;
    (of("connections"), of("new_connections"))
}

/// The state both entries of the flows from `port` carry.
fn states(t: &TestDatapath, port: u16) -> Vec<u8> {
    t.maps
        .connections()
        .unwrap()
        .into_iter()
        .filter(|(k, v)| {
            k.original_flow(v)
                .is_some_and(|f| u16::from_be(f.src.port_be) == port)
        })
        .map(|(_, v)| v.state)
        .collect()
}

/// nf_conntrack_proto_tcp.c: SYN -> SYN_SENT, the SYN-ACK -> SYN_RECV, the
/// client's ACK -> ESTABLISHED (IPS_ASSURED): only then does the flow
/// leave the table that floods fill.
#[test]
fn a_completed_handshake_moves_the_flow_to_the_assured_table() {
    let mut t = TestDatapath::load();
    services(&mut t);
    t.run_xdp(&tcp_flags_frame(CLIENT, 40000, NODE, 30080, SYN, b""));
    assert_eq!(states(&t, 40000), [CT_SYN_SENT; 2]);
    assert_eq!(tables(&t), (0, 2));

    let (_, out) = t.run_tc(&tcp_flags_frame(POD, 8080, CLIENT, 40000, SYN | ACK, b""));
    assert_eq!(check_frame(&out).sport, 30080);
    assert_eq!(states(&t, 40000), [CT_SYN_RECV; 2]);
    assert_eq!(tables(&t), (0, 2), "a reply alone assures nothing");

    let (_, out) = t.run_xdp(&tcp_flags_frame(CLIENT, 40000, NODE, 30080, ACK, b""));
    assert_eq!(check_frame(&out).dst, POD);
    assert_eq!(states(&t, 40000), [CT_ESTABLISHED; 2]);
    assert_eq!(tables(&t), (2, 0));
    assert_eq!(t.stat(Reason::CtPromoted), 1);

    // Both directions still translate from the assured table.
    let (_, out) = t.run_tc(&tcp_flags_frame(POD, 8080, CLIENT, 40000, ACK, b"data"));
    assert_eq!(check_frame(&out).src, NODE);
    let (_, out) = t.run_xdp(&tcp_flags_frame(CLIENT, 40000, NODE, 30080, ACK, b"more"));
    assert_eq!(check_frame(&out).dst, POD);
}

/// The kernel's close timeout after an RST, and its reopening of a closed
/// tuple by a new SYN.
#[test]
fn an_rst_closes_the_flow_and_a_new_syn_reopens_it() {
    let mut t = TestDatapath::load();
    services(&mut t);
    t.run_xdp(&tcp_flags_frame(CLIENT, 40001, NODE, 30080, SYN, b""));
    t.run_tc(&tcp_flags_frame(POD, 8080, CLIENT, 40001, RST | ACK, b""));
    assert_eq!(states(&t, 40001), [CT_CLOSED; 2]);
    t.run_xdp(&tcp_flags_frame(CLIENT, 40001, NODE, 30080, SYN, b""));
    assert_eq!(states(&t, 40001), [CT_SYN_SENT; 2]);
    t.run_xdp(&tcp_flags_frame(CLIENT, 40001, NODE, 30080, FIN | ACK, b""));
    assert_eq!(states(&t, 40001), [lb_common::ct::CT_CLOSING; 2]);
}

/// Entries expire after their state's timeout (the kernel's udp_timeout
/// for an unreplied UDP flow) and the sweep removes both directions, while
/// an established TCP flow of the same age stays.
#[test]
fn expired_flows_are_swept_and_live_ones_stay() {
    let mut t = TestDatapath::load();
    services(&mut t);
    t.run_xdp(&udp_frame(CLIENT, 50000, NODE, 30053, b"query", true));
    t.run_xdp(&tcp_flags_frame(CLIENT, 40002, NODE, 30080, SYN, b""));
    t.run_tc(&tcp_flags_frame(POD, 8080, CLIENT, 40002, SYN | ACK, b""));
    t.run_xdp(&tcp_flags_frame(CLIENT, 40002, NODE, 30080, ACK, b""));
    assert_eq!(states(&t, 50000), [CT_UNREPLIED; 2]);
    assert_eq!(tables(&t), (2, 2));

    // Nothing has expired yet.
    let now = monotonic_s();
    let judgement = sweep_once(&mut t.maps, now).unwrap();
    assert_eq!(judgement.expired_flows, 0);
    assert_eq!(tables(&t), (2, 2));

    // Age every entry past the UDP timeout (and far under TCP's).
    let age = TIMEOUT_UDP_S + 5;
    t.maps
        .rewrite_connections(|_, v| {
            v.created_s -= age;
            v.last_seen_s -= age;
        })
        .unwrap();
    let judgement = sweep_once(&mut t.maps, now).unwrap();
    assert_eq!(judgement.expired_flows, 1);
    assert_eq!(judgement.live, vec![(CT_ESTABLISHED, 1)]);
    assert_eq!(
        tables(&t),
        (2, 0),
        "both UDP entries went, the TCP flow stayed"
    );

    // The next datagram starts a fresh flow.
    let (_, out) = t.run_xdp(&udp_frame(CLIENT, 50000, NODE, 30053, b"again", true));
    assert_eq!(check_frame(&out).dst, POD);
    assert_eq!(states(&t, 50000), [CT_UNREPLIED; 2]);
}

/// A packet refreshes its own entry's last-seen second (the partner keeps
/// its own), and only when the second changed.
#[test]
fn a_packet_refreshes_its_own_entrys_second() {
    let mut t = TestDatapath::load();
    services(&mut t);
    t.run_xdp(&udp_frame(CLIENT, 50001, NODE, 30053, b"a", true));
    t.maps
        .rewrite_connections(|_, v| v.last_seen_s -= 10)
        .unwrap();
    let aged = monotonic_s() - 10;
    t.run_xdp(&udp_frame(CLIENT, 50001, NODE, 30053, b"b", true));
    let now = monotonic_s();
    let conns = t.maps.connections().unwrap();
    let of = |original: bool| {
        conns
            .iter()
            .find(|(k, _)| k.is_original() == original)
            .unwrap()
            .1
    };
    assert!(
        of(true).last_seen_s + 1 >= now,
        "the original entry is refreshed"
    );
    assert!(of(false).last_seen_s <= aged, "the reply entry is not");
}

/// The datapath's second follows the coarse clock across a second's bound:
/// each CPU caches the second it read for the jiffy it read it at
/// (`lb-ebpf`'s `ct/clock.rs`), and a later jiffy reads the clock again.
/// A cache that kept its first reading would leave the entry at the first
/// packet's second.
#[test]
fn the_datapaths_second_moves_with_the_clock() {
    let mut t = TestDatapath::load();
    services(&mut t);
    let before = monotonic_s();
    t.run_xdp(&udp_frame(CLIENT, 50002, NODE, 30053, b"a", true));
    let first = t.maps.connections().unwrap()[0].1.last_seen_s;
    // The coarse clock may trail the fine one by a tick.
    assert!(
        first + 1 >= before && first <= monotonic_s(),
        "created at the clock's second ({before}), not {first}"
    );
    // Bounded: the clock moves a second on within 1.2 s.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    t.run_xdp(&udp_frame(CLIENT, 50002, NODE, 30053, b"b", true));
    let after = monotonic_s();
    let conns = t.maps.connections().unwrap();
    let original = conns.iter().find(|(k, _)| k.is_original()).unwrap().1;
    assert!(original.last_seen_s > first, "refreshed to a later second");
    assert!(
        original.last_seen_s + 1 >= after && original.last_seen_s <= after,
        "the clock's second ({after}), not {}",
        original.last_seen_s
    );
}
