//! The recheck generation (`lb_common::ct::generation`): an established
//! flow's packets skip the backend recheck, and an assured flow's the
//! frontend lookup, only while the agent wrote no backend and no frontend,
//! so a backend change is still seen by the very next packet of every
//! flow, a frontend given to another Service port stops its old flows at
//! their next packet, and a removed frontend translates nothing more.

mod common;

use std::net::Ipv4Addr;

use common::*;
use lb::datapath::DatapathMaps as _;
use lb_common::{
    Ct4Key, Endpoint4, Flow4, FrontendValue, PROTO_TCP, SCOPE_EXTERNAL,
    ct::generation::entry_generation,
    packet::tcp::{ACK, SYN},
    reason::Reason,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
const OTHER_POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 9);

fn original_key(sport: u16) -> Ct4Key {
    Ct4Key::original(Flow4::new(
        Endpoint4::new(be32(CLIENT), be16(sport)),
        Endpoint4::new(be32(NODE), be16(30080)),
        PROTO_TCP,
    ))
}

/// A TCP flow from `sport`, through its handshake, to the one backend.
fn established(t: &mut TestDatapath, sport: u16) {
    install_service(
        &mut t.maps,
        frontend_key(NODE, 30080, PROTO_TCP, SCOPE_EXTERNAL),
        1,
        0,
        0,
        &[(1, backend(POD, 8080, PROTO_TCP))],
    );
    t.run_xdp(&tcp_flags_frame(CLIENT, sport, NODE, 30080, SYN, b""));
    t.run_tc(&tcp_flags_frame(POD, 8080, CLIENT, sport, SYN | ACK, b""));
    let (_, out) = t.run_xdp(&tcp_flags_frame(CLIENT, sport, NODE, 30080, ACK, b""));
    assert_eq!(check_frame(&out).dst, POD);
}

/// A frontend value of the Service port `service_id`, with one backend.
fn service_port(service_id: u32) -> FrontendValue {
    FrontendValue {
        service_id,
        table_id: 0,
        backend_count: 1,
        flags: 0,
    }
}

fn checked_gen(t: &TestDatapath, sport: u16) -> u16 {
    t.maps
        .connection(&original_key(sport))
        .unwrap()
        .expect("the flow's original entry")
        .checked_gen
}

/// Every write of the backends map (added, re-pointed, removed) moves the
/// generation, after the write.
#[test]
fn every_backend_write_moves_the_generation() {
    let mut t = TestDatapath::load();
    let start = t.maps.ct_generation();
    t.maps
        .set_backend(7, &backend(POD, 8080, PROTO_TCP))
        .unwrap();
    assert_eq!(t.maps.ct_generation(), start + 1, "added");
    t.maps
        .set_backend(7, &backend(OTHER_POD, 8080, PROTO_TCP))
        .unwrap();
    assert_eq!(t.maps.ct_generation(), start + 2, "its id re-pointed");
    t.maps.remove_backend(7).unwrap();
    assert_eq!(t.maps.ct_generation(), start + 3, "removed");
}

/// The entry remembers the generation its recheck passed at; a backend
/// written since makes the flow's next packet (in the same second, moving
/// no state) recheck, and remember the new one.
#[test]
fn the_first_packet_after_a_backend_write_rechecks() {
    let mut t = TestDatapath::load();
    established(&mut t, 41000);
    let passed_at = checked_gen(&t, 41000);
    assert_ne!(passed_at, 0, "the handshake's ACK was rechecked");
    assert_eq!(passed_at, entry_generation(t.maps.ct_generation()));

    t.maps
        .set_backend(2, &backend(OTHER_POD, 8080, PROTO_TCP))
        .unwrap();
    let (_, out) = t.run_xdp(&tcp_flags_frame(CLIENT, 41000, NODE, 30080, ACK, b"x"));
    assert_eq!(check_frame(&out).dst, POD);
    assert_eq!(
        checked_gen(&t, 41000),
        entry_generation(t.maps.ct_generation()),
        "rechecked at the new generation"
    );
    assert_ne!(checked_gen(&t, 41000), passed_at);
}

/// Every write of the frontends map (added or changed, removed) moves the
/// generation, after the write: assured flows skip their frontend lookup
/// only while it stands.
#[test]
fn every_frontend_write_moves_the_generation() {
    let mut t = TestDatapath::load();
    let start = t.maps.ct_generation();
    let key = frontend_key(NODE, 30081, PROTO_TCP, SCOPE_EXTERNAL);
    let value = service_port(3);
    t.maps.set_frontend(&key, &value).unwrap();
    assert_eq!(t.maps.ct_generation(), start + 1, "added");
    t.maps.remove_frontend(&key).unwrap();
    assert_eq!(t.maps.ct_generation(), start + 2, "removed");
    // A sync writes its frontends in one batch update: it moves the
    // generation too, once the whole batch is in.
    let batch = [
        (key, value),
        (frontend_key(NODE, 30082, PROTO_TCP, SCOPE_EXTERNAL), value),
    ];
    t.maps.set_frontends(&batch).unwrap();
    assert!(t.maps.ct_generation() > start + 2, "a batch written");
}

/// The frontend given to another Service port without any backend write
/// (the frontend write alone moves the generation): the old flow's next
/// packet, in the same second, is not followed (`drop_ct_stale`), as
/// `still_valid` decides (ct/recheck.rs: the Service the flow was made
/// for is gone); neither skip hides it.
#[test]
fn a_frontend_given_to_another_service_port_stops_the_next_packet() {
    let mut t = TestDatapath::load();
    established(&mut t, 41001);
    let (_, out) = t.run_xdp(&tcp_flags_frame(CLIENT, 41001, NODE, 30080, ACK, b"x"));
    assert_eq!(check_frame(&out).dst, POD, "the fast path's packet");
    let generation = t.maps.ct_generation();
    let key = frontend_key(NODE, 30080, PROTO_TCP, SCOPE_EXTERNAL);
    let value = service_port(2);
    t.maps.set_frontend(&key, &value).unwrap();
    assert_eq!(
        t.maps.ct_generation(),
        generation + 1,
        "the frontend written"
    );
    let (action, _) = t.run_xdp(&tcp_flags_frame(CLIENT, 41001, NODE, 30080, ACK, b"x"));
    assert_eq!(action, XDP_DROP);
    assert_eq!(t.stat(Reason::DropCtStale), 1);
}

/// The frontend removed while an assured flow runs: its next packet, in
/// the same second, is not translated (no frontend: it passes to the
/// stack untouched, `pass_no_service`), as the full path decides (the
/// frontend lookup comes first there). The entry names its backend, but
/// the fast path never uses it past a frontend write.
#[test]
fn a_removed_frontend_translates_no_more_packets() {
    let mut t = TestDatapath::load();
    established(&mut t, 41002);
    let (_, out) = t.run_xdp(&tcp_flags_frame(CLIENT, 41002, NODE, 30080, ACK, b"x"));
    assert_eq!(check_frame(&out).dst, POD, "the fast path's packet");
    let passed = t.stat(Reason::PassNoService);
    t.maps
        .remove_frontend(&frontend_key(NODE, 30080, PROTO_TCP, SCOPE_EXTERNAL))
        .unwrap();
    let (action, out) = t.run_xdp(&tcp_flags_frame(CLIENT, 41002, NODE, 30080, ACK, b"y"));
    assert_eq!(action, XDP_PASS);
    assert_eq!(check_frame(&out).dst, NODE, "untranslated");
    assert_eq!(t.stat(Reason::PassNoService), passed + 1);
}

/// Waits until the coarse clock (the datapath's `bpf_ktime_get_coarse_ns`)
/// is at least 100 ms from its next second, as the datapath counts seconds
/// (`lb_common::ct::seconds`), so a few packets share one.
fn early_in_a_second() {
    for _ in 0..50 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a plain clock read into a local.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        let now = lb_common::ct::timespec_seconds(ts.tv_sec as u64, ts.tv_nsec as u64);
        let soon =
            lb_common::ct::timespec_seconds(ts.tv_sec as u64, ts.tv_nsec as u64 + 100_000_000);
        if now == soon {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The skip is real, and the writer's bump is what makes it safe: a
/// frontend changed behind the writer's back (no generation moved, which
/// the agent never does) is not looked at by an assured flow's next packet
/// in the same second, which its entry alone translates; once the
/// generation moves, the next packet looks the frontend up and stops
/// (`drop_ct_stale`).
#[test]
fn an_assured_flow_skips_its_frontend_while_the_generation_stands() {
    use aya::maps::{HashMap, Map, MapData};
    let mut t = TestDatapath::load();
    established(&mut t, 41003);
    early_in_a_second();
    let (_, out) = t.run_xdp(&tcp_flags_frame(CLIENT, 41003, NODE, 30080, ACK, b"x"));
    assert_eq!(check_frame(&out).dst, POD);
    let data = MapData::from_pin(t.pin_dir.join(lb_common::FRONTENDS4)).unwrap();
    let mut frontends: HashMap<_, lb_common::Frontend4Key, FrontendValue> =
        HashMap::try_from(Map::HashMap(data)).unwrap();
    let key = frontend_key(NODE, 30080, PROTO_TCP, SCOPE_EXTERNAL);
    let other = service_port(2);
    frontends.insert(&key, &other, 0).unwrap();
    let (action, out) = t.run_xdp(&tcp_flags_frame(CLIENT, 41003, NODE, 30080, ACK, b"y"));
    assert_eq!(action, XDP_PASS);
    assert_eq!(
        check_frame(&out).dst,
        POD,
        "translated from the entry alone"
    );
    assert_eq!(t.stat(Reason::DropCtStale), 0);

    t.maps.recheck_every_flow();
    let (action, _) = t.run_xdp(&tcp_flags_frame(CLIENT, 41003, NODE, 30080, ACK, b"z"));
    assert_eq!(action, XDP_DROP);
    assert_eq!(t.stat(Reason::DropCtStale), 1);
}

/// An entry remembers 16 bits of the generation: 2^16 writes after its
/// recheck bring the same bits round. The writer spreads any second's
/// bumps under 2^16 (datapath/kernel/generation.rs), so the flow's next
/// packet falls in a later second than its recheck and looks again: the
/// frontend given to another Service port among those writes stops it
/// (`drop_ct_stale`) instead of a false match translating it.
#[test]
fn sixteen_bits_of_writes_coming_round_still_stop_the_next_packet() {
    let mut t = TestDatapath::load();
    established(&mut t, 41004);
    early_in_a_second();
    let (_, out) = t.run_xdp(&tcp_flags_frame(CLIENT, 41004, NODE, 30080, ACK, b"x"));
    assert_eq!(check_frame(&out).dst, POD, "the fast path's packet");
    let passed_at = checked_gen(&t, 41004);
    let key = frontend_key(NODE, 30080, PROTO_TCP, SCOPE_EXTERNAL);
    t.maps.set_frontend(&key, &service_port(2)).unwrap();
    // The rest of 2^16 bumps at once, as fast as a bulk removal's.
    for _ in 1..1 << 16 {
        t.maps.recheck_every_flow();
    }
    assert_eq!(
        entry_generation(t.maps.ct_generation()),
        passed_at,
        "the remembered bits came round"
    );
    let (action, _) = t.run_xdp(&tcp_flags_frame(CLIENT, 41004, NODE, 30080, ACK, b"y"));
    assert_eq!(action, XDP_DROP);
    assert_eq!(t.stat(Reason::DropCtStale), 1);
}
