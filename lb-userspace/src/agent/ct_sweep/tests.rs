use lb_common::{
    Ct4Value, Endpoint4, Flow4, PROTO_TCP, PROTO_UDP,
    ct::{CT_ESTABLISHED, CT_UNREPLIED, TIMEOUT_ESTABLISHED_S, TIMEOUT_UDP_S},
};

use super::*;
use crate::agent::ct_flows::entry;

fn ep(last: u8, port: u16) -> Endpoint4 {
    Endpoint4::new(u32::from_ne_bytes([10, 0, 0, last]), port.to_be())
}

/// Both entries of a flow client:port -> frontend translated to the backend.
fn pair(proto: u8, port: u16, state: u8, original_s: u32, reply_s: u32) -> [(Ct4Key, Ct4Value); 2] {
    let flow = Flow4::new(ep(1, port), ep(2, 80), proto);
    let backend = ep(3, 8080);
    let value = |nat: Endpoint4, last_seen_s| entry(nat, 1, state, last_seen_s);
    [
        (Ct4Key::original(flow), value(backend, original_s)),
        (
            Ct4Key::reply(flow.reply_via(backend)),
            value(flow.dst, reply_s),
        ),
    ]
}

#[test]
fn a_flow_expires_whole_after_its_states_timeout() {
    let now = 100_000;
    let mut entries = Vec::new();
    entries.extend(pair(
        PROTO_UDP,
        1,
        CT_UNREPLIED,
        now - TIMEOUT_UDP_S - 1,
        now - TIMEOUT_UDP_S - 1,
    ));
    entries.extend(pair(
        PROTO_UDP,
        2,
        CT_UNREPLIED,
        now - TIMEOUT_UDP_S,
        now - TIMEOUT_UDP_S,
    ));
    entries.extend(pair(PROTO_TCP, 3, CT_ESTABLISHED, now - 1000, now - 1000));
    let judgement = judge(&Flows::of(&entries), now);
    let mut expected: Vec<Ct4Key> = entries[..2].iter().map(|(k, _)| *k).collect();
    expected.sort_unstable();
    assert_eq!(judgement.expired, expected);
    assert_eq!(judgement.expired_flows, 1);
    assert_eq!(judgement.live, vec![(CT_ESTABLISHED, 1), (CT_UNREPLIED, 1)]);
}

/// A server that pushes to an idle client refreshes only the reply entry:
/// the flow lives as long as either direction does.
#[test]
fn the_fresher_direction_keeps_a_flow_alive() {
    let now = 1_000_000;
    let entries = pair(
        PROTO_TCP,
        4,
        CT_ESTABLISHED,
        now - TIMEOUT_ESTABLISHED_S - 10,
        now - 5,
    );
    let judgement = judge(&Flows::of(&entries), now);
    assert!(judgement.expired.is_empty());
    assert_eq!(judgement.live, vec![(CT_ESTABLISHED, 1)]);
}

#[test]
fn an_orphan_entry_expires_alone() {
    let now = 500;
    let [original, _] = pair(PROTO_UDP, 5, CT_UNREPLIED, 0, 0);
    let judgement = judge(&Flows::of(&[original]), now);
    assert_eq!(judgement.expired, vec![original.0]);
}

/// A flood is more new flows in one period than the new-flow table holds
/// (two entries each).
#[test]
fn a_flood_is_new_flows_overrunning_the_new_flow_table() {
    assert!(!is_flood(0, 1024));
    assert!(!is_flood(512, 1024), "exactly full is no flood yet");
    assert!(is_flood(513, 1024));
    assert!(!is_flood(1_000_000, 0), "no table, no verdict");
}

/// A masqueraded flow's reply entry is keyed backend -> node address and
/// SNAT port: it is still one flow with its original entry (its client is
/// the entry's peer), so both expire together and free the port, and a
/// reply-only refresh keeps both.
#[test]
fn a_masqueraded_flow_is_one_flow_with_its_snat_reply_entry() {
    use lb_common::CT_FLAG_SNAT;
    let now = 100_000;
    let masqueraded = |port: u16, original_s: u32, reply_s: u32| {
        let [(okey, mut original), (_, mut reply)] =
            pair(PROTO_UDP, port, CT_UNREPLIED, original_s, reply_s);
        let flow = okey.flow();
        let source = ep(9, 61_000 + port);
        original.flags = CT_FLAG_SNAT;
        (original.peer_addr_be, original.peer_port_be) = (source.addr_be, source.port_be);
        reply.flags = CT_FLAG_SNAT;
        (reply.peer_addr_be, reply.peer_port_be) = (flow.src.addr_be, flow.src.port_be);
        let rkey = Ct4Key::reply(original.reply_flow(flow));
        assert_eq!(rkey.dst_port_be, source.port_be);
        [(okey, original), (rkey, reply)]
    };
    let old = now - TIMEOUT_UDP_S - 1;
    let mut entries = Vec::new();
    entries.extend(masqueraded(1, old, old));
    entries.extend(masqueraded(2, old, now - 1));
    let judgement = judge(&Flows::of(&entries), now);
    let mut expected: Vec<Ct4Key> = entries[..2].iter().map(|(k, _)| *k).collect();
    expected.sort_unstable();
    assert_eq!(judgement.expired, expected);
    assert_eq!(judgement.expired_flows, 1);
    assert_eq!(judgement.live, vec![(CT_UNREPLIED, 1)]);
}
