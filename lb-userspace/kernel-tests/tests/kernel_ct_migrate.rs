//! Upgrading from the connection table before states (`lb_ct4_v1`): its
//! entries are carried over into the assured table, so an established
//! connection's next ACK (which may not open a flow) is still translated,
//! both ways, and the old pin is gone. From the tables before masquerade
//! (`lb_ct4_v2`, `lb_ct4_new_v2`): each entry into its `_v3` table, live
//! flows keep translating. And from a version that counted fewer reasons:
//! its pinned counters map is replaced, not refused.

mod common;

use std::net::Ipv4Addr;

use aya::maps::{HashMap, MapData};
use common::*;
use lb::datapath::{
    ct_migrate::{CT4_V1, Ct4ValueV1, migrate_v1},
    ct_migrate_v2::{CT4_NEW_V2, CT4_V2, Ct4ValueV2, migrate_v2},
};
use lb_common::{
    Ct4Key, Endpoint4, Flow4, PROTO_TCP, SCOPE_EXTERNAL,
    ct::{CT_ESTABLISHED, CT_SYN_RECV},
    packet::tcp::ACK,
    reason::Reason,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);

fn ep(addr: Ipv4Addr, port: u16) -> Endpoint4 {
    Endpoint4::new(be32(addr), be16(port))
}

#[test]
fn an_established_connection_survives_the_upgrade_of_the_table() {
    let mut t = TestDatapath::load();
    install_service(
        &mut t.maps,
        frontend_key(NODE, 30080, PROTO_TCP, SCOPE_EXTERNAL),
        1,
        0,
        0,
        &[(1, backend(POD, 8080, PROTO_TCP))],
    );
    // The old agent's table: one established flow, both directions.
    let flow = Flow4::new(ep(CLIENT, 40000), ep(NODE, 30080), PROTO_TCP);
    let backend = ep(POD, 8080);
    let value = |nat: Endpoint4| Ct4ValueV1 {
        nat_addr_be: nat.addr_be,
        nat_port_be: nat.port_be,
        _pad: 0,
        backend_id: 1,
        service_id: 1,
        // Mid-second, so the seconds are whole under the datapath's clock
        // (`lb_common::ct::seconds`, whose bounds fall within 1.1 ms of the
        // true ones).
        created_ns: 1_500_000_000,
        last_seen_ns: 2_500_000_000,
    };
    let mut old = HashMap::<MapData, Ct4Key, Ct4ValueV1>::create(16, 0).unwrap();
    old.insert(&Ct4Key::original(flow), &value(backend), 0)
        .unwrap();
    old.insert(&Ct4Key::reply(flow.reply_via(backend)), &value(flow.dst), 0)
        .unwrap();
    let pin = t.pin_dir.join(CT4_V1);
    old.pin(&pin).unwrap();

    assert_eq!(migrate_v1(&t.pin_dir, &mut t.maps).unwrap(), Some(2));
    assert!(!pin.exists(), "the old pin is removed");
    let conns = t.maps.connections().unwrap();
    assert_eq!(conns.len(), 2);
    assert!(
        conns
            .iter()
            .all(|(_, v)| v.state == CT_ESTABLISHED && v.last_seen_s == 2)
    );
    assert_eq!(migrate_v1(&t.pin_dir, &mut t.maps).unwrap(), None, "once");

    let (_, out) = t.run_xdp(&tcp_flags_frame(CLIENT, 40000, NODE, 30080, ACK, b"after"));
    assert_eq!(check_frame(&out).dst, POD);
    let (_, out) = t.run_tc(&tcp_flags_frame(POD, 8080, CLIENT, 40000, ACK, b"reply"));
    assert_eq!(
        (check_frame(&out).src, check_frame(&out).sport),
        (NODE, 30080)
    );
    assert_eq!(t.stat(Reason::PassCtNotOpening), 0);
    let fill = t.maps.fill().unwrap();
    let assured = fill.iter().find(|f| f.map == "connections").unwrap();
    assert_eq!(assured.entries, 2, "in the assured table");
}

#[test]
fn live_flows_survive_the_table_without_room_for_masquerade() {
    let mut t = TestDatapath::load();
    tcp_and_udp_node_ports(&mut t, NODE, POD);
    let value = |nat: Endpoint4, state| Ct4ValueV2 {
        nat_addr_be: nat.addr_be,
        nat_port_be: nat.port_be,
        state,
        _pad: 0,
        backend_id: 1,
        service_id: 1,
        created_s: 1,
        last_seen_s: u32::MAX / 2,
    };
    // An established connection in the assured table, a handshake under
    // way in the table of new flows.
    let backend = ep(POD, 8080);
    let established = Flow4::new(ep(CLIENT, 40000), ep(NODE, 30080), PROTO_TCP);
    let opening = Flow4::new(ep(CLIENT, 40001), ep(NODE, 30080), PROTO_TCP);
    for (name, flow, state) in [
        (CT4_V2, established, CT_ESTABLISHED),
        (CT4_NEW_V2, opening, CT_SYN_RECV),
    ] {
        let mut old = HashMap::<MapData, Ct4Key, Ct4ValueV2>::create(16, 0).unwrap();
        old.insert(&Ct4Key::original(flow), &value(backend, state), 0)
            .unwrap();
        old.insert(
            &Ct4Key::reply(flow.reply_via(backend)),
            &value(flow.dst, state),
            0,
        )
        .unwrap();
        old.pin(t.pin_dir.join(name)).unwrap();
    }

    assert_eq!(migrate_v2(&t.pin_dir, &mut t.maps).unwrap(), Some(4));
    assert!(!t.pin_dir.join(CT4_V2).exists() && !t.pin_dir.join(CT4_NEW_V2).exists());
    assert_eq!(migrate_v2(&t.pin_dir, &mut t.maps).unwrap(), None, "once");
    let fill = t.maps.fill().unwrap();
    let entries = |map: &str| fill.iter().find(|f| f.map == map).unwrap().entries;
    assert_eq!((entries("connections"), entries("new_connections")), (2, 2));
    assert!(
        t.maps
            .connections()
            .unwrap()
            .iter()
            .all(|(_, v)| !v.is_snat())
    );

    for sport in [40000, 40001] {
        let (_, out) = t.run_xdp(&tcp_flags_frame(CLIENT, sport, NODE, 30080, ACK, b"after"));
        assert_eq!(check_frame(&out).dst, POD);
        let (_, out) = t.run_tc(&tcp_flags_frame(POD, 8080, CLIENT, sport, ACK, b"reply"));
        assert_eq!(
            (check_frame(&out).src, check_frame(&out).sport),
            (NODE, 30080)
        );
    }
    assert_eq!(t.stat(Reason::PassCtNotOpening), 0);
    assert_eq!(t.stat(Reason::DnatEstablished), 2);
}

/// The version before counted 17 reasons in `lb_stats_v1`: the loader
/// would refuse a pinned map of another size, so the outgrown counters
/// give way to a fresh map and the new datapath loads over every other pin.
#[test]
fn an_outgrown_counters_map_is_replaced_on_upgrade() {
    use aya::maps::PerCpuArray;
    use lb_common::{STATS, reason::REASON_COUNT};
    ensure_bpffs();
    let pin_dir = std::path::Path::new("/sys/fs/bpf").join(unique_name());
    std::fs::create_dir_all(&pin_dir).unwrap();
    let guard = PinGuard(pin_dir.clone());
    let old = PerCpuArray::<MapData, u64>::create(17, 0).unwrap();
    old.pin(pin_dir.join(STATS)).unwrap();

    let t = TestDatapath::load_at(pin_dir.clone(), 8, 4096).expect("loads over the old pins");
    let entries = MapData::from_pin(pin_dir.join(STATS))
        .unwrap()
        .info()
        .unwrap()
        .max_entries();
    assert_eq!(entries, REASON_COUNT);
    assert_eq!(
        t.stat(Reason::DropSourceRange),
        0,
        "every reason has a counter"
    );
    std::mem::forget(guard);
}
