use lb_common::{
    Endpoint4, PROTO_TCP, PROTO_UDP,
    ct::{CT_ESTABLISHED, CT_UNREPLIED, TIMEOUT_ESTABLISHED_S, TIMEOUT_UDP_S},
};

use super::*;

fn ep(last: u8, port: u16) -> Endpoint4 {
    Endpoint4::new(u32::from_ne_bytes([10, 0, 0, last]), port.to_be())
}

/// Both entries of a flow client:port -> frontend translated to the backend.
fn pair(proto: u8, port: u16, state: u8, original_s: u32, reply_s: u32) -> [(Ct4Key, Ct4Value); 2] {
    let flow = Flow4::new(ep(1, port), ep(2, 80), proto);
    let backend = ep(3, 8080);
    let value = |nat: Endpoint4, last_seen_s| Ct4Value {
        nat_addr_be: nat.addr_be,
        nat_port_be: nat.port_be,
        state,
        _pad: 0,
        backend_id: 1,
        service_id: 1,
        created_s: 0,
        last_seen_s,
    };
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
    let judgement = judge(&entries, now);
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
    let judgement = judge(&entries, now);
    assert!(judgement.expired.is_empty());
    assert_eq!(judgement.live, vec![(CT_ESTABLISHED, 1)]);
}

#[test]
fn an_orphan_entry_expires_alone() {
    let now = 500;
    let [original, _] = pair(PROTO_UDP, 5, CT_UNREPLIED, 0, 0);
    let judgement = judge(&[original], now);
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
