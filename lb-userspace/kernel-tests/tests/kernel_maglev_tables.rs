//! Maglev tables sized per backend count and swapped whole (an array of
//! maps, `lb_maglev_v2`), in the real XDP program under BPF_PROG_TEST_RUN
//! with the maps filled by the real plan and writer: the size each table
//! gets, the kernel selecting with exactly that size, tables changed under
//! traffic, the kernel memory a table costs, and the upgrade from the flat
//! array of 1,021-slot tables (`lb_maglev_v1`).

mod common;

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, Ordering},
};

use aya::maps::{Array, MapData};
use common::*;
use lb::{
    datapath::{DatapathMaps as _, kernel::tables_dir},
    plan::Applied,
};
use lb_common::{
    FE_KIND_NODE_PORT, FE_KIND_SHIFT, MAGLEV_TABLE_SIZE, MAGLEV_V1, PROTO_TCP, SCOPE_EXTERNAL,
    maglev::table_size, reason::Reason,
};

const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const NODE_PORT: u16 = 30700;
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);

fn pod(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 245, (i / 250) as u8, (i % 250) as u8 + 1)
}

/// A NodePort Service over the endpoints `pods` (indexes), planned and
/// applied.
fn serve(t: &mut lb::datapath::KernelMaps, applied: &mut Applied, pods: &[usize]) {
    let endpoints: Vec<Ipv4Addr> = pods.iter().map(|i| pod(*i)).collect();
    let service = ("sized", Ipv4Addr::new(10, 96, 0, 170), NODE_PORT);
    serve_node_port(t, applied, service, &endpoints, NODE);
}

/// The external NodePort frontend's value.
fn frontend(t: &TestDatapath) -> lb_common::FrontendValue {
    let key = frontend_key(NODE, NODE_PORT, PROTO_TCP, SCOPE_EXTERNAL);
    let frontends = t.maps.frontends().unwrap();
    frontends.iter().find(|(k, _)| *k == key).unwrap().1
}

/// What a SYN from `sport` does: the action and where it goes.
fn syn(t: &TestDatapath, sport: u16) -> (u32, Ipv4Addr) {
    let (action, out) = t.run_xdp(&tcp_frame(CLIENT, sport, NODE, NODE_PORT, true, b""));
    let dst = if action == XDP_PASS {
        check_frame(&out).dst
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    (action, dst)
}

fn hash(sport: u16) -> u32 {
    tcp_flow_hash(CLIENT, sport, NODE, NODE_PORT)
}

/// The Maglev paper's advice (M well above 100 N): three backends keep the
/// smallest table, 150 get 15,013 slots, and the kernel selects with that
/// size: every new flow goes where slot `hash % size` of the table read
/// back says.
#[test]
fn each_table_is_sized_per_backend_count_and_the_kernel_uses_its_size() {
    for count in [3usize, 150] {
        let mut t = TestDatapath::load();
        let pods: Vec<usize> = (0..count).collect();
        serve(&mut t.maps, &mut Applied::default(), &pods);
        let fe = frontend(&t);
        let table = t.maps.read_table(fe.table_id).unwrap();
        assert_eq!(table.len() as u32, table_size(count as u32), "{count}");
        let ids = backend_addresses(&t.maps);
        let mut reached = BTreeSet::new();
        for sport in 30_000..30_256 {
            let expected = ids[&table[(hash(sport) % table.len() as u32) as usize]];
            assert_eq!(syn(&t, sport), (XDP_PASS, expected), "{count}: {sport}");
            reached.insert(expected);
        }
        assert!(
            reached.len() >= count.min(100),
            "{count}: {}",
            reached.len()
        );
    }
    assert_eq!(table_size(3), MAGLEV_TABLE_SIZE);
    assert_eq!(table_size(150), 15_013);
}

/// A table changes while packets flow: another thread swaps the Service
/// between two backend sets 40 times (each time a whole new table, then
/// the frontend flip, then the removals), and not one of the new flows
/// sent meanwhile is dropped for a missing backend or half a table (a
/// half-written table would name backend 0, which never exists); once a
/// change is applied, no new flow reaches the backend it removed.
#[test]
fn a_table_change_under_traffic_never_reaches_a_removed_backend() {
    let mut t = TestDatapath::load();
    let mut applied = Applied::default();
    let sets = [vec![0, 1, 2], vec![0, 1, 3]];
    serve(&mut t.maps, &mut applied, &sets[0]);
    let mut writer = t.dp().maps().unwrap();
    let done = AtomicBool::new(false);
    let (sent, dropped) = std::thread::scope(|s| {
        s.spawn(|| {
            for round in 1..=40 {
                serve(&mut writer, &mut applied, &sets[round % 2]);
            }
            done.store(true, Ordering::Relaxed);
        });
        let (mut sent, mut dropped) = (0u32, Vec::new());
        let mut sport = 31_000u16;
        while !done.load(Ordering::Relaxed) || sent < 200 {
            let (action, dst) = syn(&t, sport);
            if action != XDP_PASS || !(0..4).any(|i| pod(i) == dst) {
                dropped.push((sport, action, dst));
            }
            sent += 1;
            sport = sport.wrapping_add(1).max(31_000);
        }
        (sent, dropped)
    });
    assert_eq!(dropped, vec![], "of {sent} new flows");
    assert_eq!(t.stat(Reason::DropBackendMissing), 0);
    // Sequentially now: after each change, the removed backend gets nothing.
    for (round, removed) in [(1usize, pod(2)), (0, pod(3)), (1, pod(2))] {
        serve(&mut t.maps, &mut applied, &sets[round]);
        for sport in 40_000..40_100 {
            let (action, dst) = syn(&t, sport);
            assert_eq!(action, XDP_PASS);
            assert_ne!(dst, removed, "round {round}, sport {sport}");
        }
        // Each flow was new: drop their entries so the next round selects.
        for (key, _) in t.maps.connections().unwrap() {
            t.maps.remove_connection(&key).unwrap();
        }
    }
}

/// What a table costs in kernel memory, by its size: 8 bytes a slot (the
/// kernel rounds an array's 4-byte values up to 8) in whole pages (a
/// mappable array's values start on a page of their own) plus the map's
/// header page, so a small Service's table costs 12 KiB and only large
/// Services pay for large ones; the outer map costs 8 bytes per id.
/// Printed for README (`--nocapture`).
#[test]
fn a_table_costs_kernel_memory_by_its_size() {
    let mut t = TestDatapath::load();
    let pin = |id: u32| tables_dir(&t.pin_dir).join(id.to_string());
    let mut figures = Vec::new();
    for (id, backends) in [(0u32, 3u32), (1, 100), (2, 655), (3, 10_000)] {
        let size = table_size(backends);
        let ids: Vec<u32> = (0..size).map(|s| s % backends.min(64) + 1).collect();
        t.maps.write_table(id, &ids).unwrap();
        let cost = memlock(&MapData::from_pin(pin(id)).unwrap());
        let payload = (8 * u64::from(size + 1)).next_multiple_of(4096);
        assert!(
            cost >= payload && cost <= payload + 4096,
            "{backends} backends: {size} slots cost {cost} bytes"
        );
        figures.push((backends, size, cost));
    }
    let outer = memlock(&MapData::from_pin(t.pin_dir.join(lb_common::MAGLEV)).unwrap());
    eprintln!(
        "maglev table memlock (backends, slots, bytes): {figures:?}; outer map with 8 ids: {outer} bytes"
    );
}

/// Upgrade from `lb_maglev_v1`: the old agent's tables live in the flat
/// array its programs read, and the new programs read `lb_maglev_v2`,
/// empty at load (a new flow would be dropped). The agent carries every
/// table a frontend references over before it swaps the programs in:
/// afterwards new flows select exactly as the old tables said (the old
/// datapath's slot, `hash % 1021`), established flows keep their backends,
/// and the old pin is gone.
#[test]
fn an_upgrade_from_the_flat_tables_keeps_every_selection() {
    ensure_bpffs();
    let pin_dir = std::path::Path::new("/sys/fs/bpf").join(unique_name());
    let guard = PinGuard(pin_dir.clone());
    std::fs::create_dir_all(&pin_dir).unwrap();
    let ids = [11u32, 12, 13, 14];
    let table_id = 3;
    let old_table = round_robin(&ids);
    {
        let mut old = Array::<MapData, u32>::create(8 * MAGLEV_TABLE_SIZE, 0).unwrap();
        for (slot, id) in (0u32..).zip(&old_table) {
            old.set(table_id * MAGLEV_TABLE_SIZE + slot, id, 0).unwrap();
        }
        aya::maps::IterableMap::<u32, u32>::map(&old)
            .pin(pin_dir.join(MAGLEV_V1))
            .unwrap();
    }
    let mut t = TestDatapath::load_at(pin_dir.clone(), 8, 4096).unwrap();
    std::mem::forget(guard);
    let pods: Vec<Ipv4Addr> = (0..4).map(pod).collect();
    for (id, addr) in ids.iter().zip(&pods) {
        t.maps
            .set_backend(*id, &backend(*addr, 8080, PROTO_TCP))
            .unwrap();
    }
    let value = lb_common::FrontendValue {
        service_id: 5,
        table_id,
        backend_count: 4,
        flags: FE_KIND_NODE_PORT << FE_KIND_SHIFT,
    };
    let key = frontend_key(NODE, NODE_PORT, PROTO_TCP, SCOPE_EXTERNAL);
    t.maps.set_frontend(&key, &value).unwrap();
    assert_eq!(syn(&t, 32_000).0, XDP_DROP, "before the carry-over");
    assert_eq!(t.stat(Reason::DropBackendMissing), 1);

    assert_eq!(t.maps.carry_over_maglev_v1(&pin_dir).unwrap(), Some(1));
    assert!(!pin_dir.join(MAGLEV_V1).exists());
    assert_eq!(t.maps.read_table(table_id).unwrap(), old_table);
    let expected = |sport: u16| {
        let id = old_table[(hash(sport) % MAGLEV_TABLE_SIZE) as usize];
        pods[ids.iter().position(|i| *i == id).unwrap()]
    };
    for sport in 32_001..32_065 {
        assert_eq!(syn(&t, sport), (XDP_PASS, expected(sport)), "sport {sport}");
    }
    for sport in 32_001..32_065 {
        let ack = tcp_flags_frame(
            CLIENT,
            sport,
            NODE,
            NODE_PORT,
            lb_common::packet::tcp::ACK,
            b"x",
        );
        let (action, out) = t.run_xdp(&ack);
        assert_eq!((action, check_frame(&out).dst), (XDP_PASS, expected(sport)));
    }
    assert_eq!(t.maps.carry_over_maglev_v1(&pin_dir).unwrap(), None, "once");
    // The agent's first plan adopts the carried table (three backends or
    // more up to ten keep 1,021 slots) or rewrites it at its size.
    let applied = Applied::read(&t.maps).unwrap();
    assert!(applied.frontends.contains_key(&key));
}

/// A released table leaves the outer map and its pin goes: the kernel
/// frees it (a frontend still naming it would find no table, which is
/// why only tables out of quarantine are released), and its id takes a
/// new table later.
#[test]
fn a_released_table_gives_its_memory_back() {
    let mut t = TestDatapath::load();
    let ids = [21u32, 22];
    let backends: Vec<_> = ids
        .iter()
        .map(|id| (*id, backend(pod(*id as usize), 8080, PROTO_TCP)))
        .collect();
    let key = frontend_key(NODE, NODE_PORT, PROTO_TCP, SCOPE_EXTERNAL);
    install_service(
        &mut t.maps,
        key,
        7,
        2,
        FE_KIND_NODE_PORT << FE_KIND_SHIFT,
        &backends,
    );
    assert_eq!(syn(&t, 33_000).0, XDP_PASS);
    let pin = tables_dir(&t.pin_dir).join("2");
    assert!(pin.exists());
    t.maps.release_table(2).unwrap();
    assert!(!pin.exists());
    assert_eq!(t.maps.read_table(2).unwrap(), Vec::<u32>::new());
    assert_eq!(syn(&t, 33_001).0, XDP_DROP, "no table under the id");
    assert_eq!(t.stat(Reason::DropBackendMissing), 1);
    t.maps.release_table(2).unwrap();
    t.maps.write_table(2, &round_robin(&ids)).unwrap();
    assert_eq!(syn(&t, 33_002).0, XDP_PASS, "the id takes a new table");
}

/// A full sync of more Services than the old 256-table swap (each table
/// now built just before it is written, all swapped in together, and the
/// services, backends and frontends written in batch updates), and than
/// one window of address space the tables are filled through holds (256
/// tables of 1,021 slots, `mapped::FillWindow`; the window is reused for
/// the rest once its tables are unmapped together): every
/// Service's table is pinned and names exactly its own two backends, a
/// SYN to each NodePort reaches one of them, and the maps read back plan
/// nothing more.
#[test]
fn a_full_sync_of_many_tables_serves_every_service_from_its_own() {
    const SERVICES: usize = 300;
    let mut t = TestDatapath::load_with(SERVICES as u32 + 8, 4096);
    let mut yaml = String::new();
    for i in 0..SERVICES {
        let port = 31_000 + i as u16;
        let (a, b) = (pod(2 * i), pod(2 * i + 1));
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: lb}}\nspec: {{type: NodePort, clusterIP: 10.96.{}.{}, ports: [{{name: http, port: 80, targetPort: 8080, nodePort: {port}}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s{i}-1, namespace: lb, labels: {{kubernetes.io/service-name: s{i}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [{a}]}}, {{addresses: [{b}]}}]\n",
            1 + i / 250,
            1 + i % 250
        ));
    }
    let mut applied = Applied::default();
    assert_eq!(
        serve_manifests(&mut t.maps, &mut applied, &yaml, NODE),
        vec![]
    );
    let pins = std::fs::read_dir(tables_dir(&t.pin_dir)).unwrap().count();
    assert_eq!(pins, SERVICES, "one pinned table per Service");
    let ids = backend_addresses(&t.maps);
    let frontends = t.maps.frontends().unwrap();
    for i in 0..SERVICES {
        let port = 31_000 + i as u16;
        let key = frontend_key(NODE, port, PROTO_TCP, SCOPE_EXTERNAL);
        let fe = frontends.iter().find(|(k, _)| *k == key).unwrap().1;
        let named: BTreeSet<Ipv4Addr> = (t.maps.read_table(fe.table_id).unwrap().iter())
            .map(|id| ids[id])
            .collect();
        let own = BTreeSet::from([pod(2 * i), pod(2 * i + 1)]);
        assert_eq!(named, own, "Service {i}");
        let (action, out) = t.run_xdp(&tcp_frame(CLIENT, 40_000, NODE, port, true, b""));
        assert_eq!(action, XDP_PASS, "Service {i}");
        assert!(own.contains(&check_frame(&out).dst), "Service {i}");
    }
    let mut reread = Applied::read(&t.maps).unwrap();
    let (_, again) = apply_manifests(&mut t.maps, &mut reread, &yaml, NODE);
    assert!(again.is_empty(), "nothing left to write: {again}");
}
