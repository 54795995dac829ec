//! A Maglev table that keeps its size is rewritten in place (only the
//! slots that change, no update of the outer map and so no RCU wait), in
//! the real XDP program under BPF_PROG_TEST_RUN with the maps written by
//! the real plan and writer: the kernel selects from the rewritten slots,
//! the outer map is updated only when the size changes (the wait for
//! readers before a removal is the per-CPU counts'), and under traffic
//! every new flow goes where the
//! old table or the new one says at its slot. kube-proxy's rule: a
//! Service's new connections go to its endpoints as the slice lists them,
//! an endpoint gone from the slice gets none (pkg/proxy/iptables
//! proxier.go writes only the ready endpoints' rules).

mod common;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, Ordering},
};

use aya::maps::MapData;
use common::*;
use lb::{
    datapath::{DatapathMaps as _, KernelMaps, kernel::tables_dir},
    plan::Applied,
};
use lb_common::{PROTO_TCP, SCOPE_EXTERNAL, reason::Reason};

const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const NODE_PORT: u16 = 30710;
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 19);

fn pod(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 246, (i / 250) as u8, (i % 250) as u8 + 1)
}

/// A NodePort Service over the endpoints `pods` (indexes), planned and
/// applied by the real planner and writer.
fn serve(maps: &mut KernelMaps, applied: &mut Applied, pods: &[usize]) {
    let endpoints: Vec<Ipv4Addr> = pods.iter().map(|i| pod(*i)).collect();
    let service = ("kept", Ipv4Addr::new(10, 96, 0, 171), NODE_PORT);
    serve_node_port(maps, applied, service, &endpoints, NODE);
}

fn table_id(maps: &KernelMaps) -> u32 {
    let key = frontend_key(NODE, NODE_PORT, PROTO_TCP, SCOPE_EXTERNAL);
    let frontends = maps.frontends().unwrap();
    frontends
        .iter()
        .find(|(k, _)| *k == key)
        .unwrap()
        .1
        .table_id
}

/// The kernel's id of the inner map pinned as the Service's table: a
/// swap pins a new map, a rewrite in place keeps it.
fn pinned_map_id(t: &TestDatapath, maps: &KernelMaps) -> u32 {
    let pin = tables_dir(&t.pin_dir).join(table_id(maps).to_string());
    MapData::from_pin(pin).unwrap().info().unwrap().id()
}

/// The backend address at each slot of the Service's table.
fn table_addresses(maps: &KernelMaps) -> Vec<Ipv4Addr> {
    let ids = backend_addresses(maps);
    let table = maps.read_table(table_id(maps)).unwrap();
    table.iter().map(|id| ids[id]).collect()
}

fn hash(sport: u16) -> u32 {
    tcp_flow_hash(CLIENT, sport, NODE, NODE_PORT)
}

/// Where a SYN from `sport` goes (unspecified: not passed).
fn syn(t: &TestDatapath, sport: u16) -> Ipv4Addr {
    let (action, out) = t.run_xdp(&tcp_frame(CLIENT, sport, NODE, NODE_PORT, true, b""));
    if action == XDP_PASS {
        check_frame(&out).dst
    } else {
        Ipv4Addr::UNSPECIFIED
    }
}

/// 2 -> 3 endpoints (both 1,021 slots) rewrites the pinned table in
/// place with no outer-map update, and the kernel selects from the new
/// slots; 3 -> 2 also keeps the map, with one wait for readers of the old
/// slots before the removed backend goes, ended by the per-CPU counts (no
/// outer update); a change of size (150 endpoints, 15,013 slots) swaps a
/// new map in.
#[test]
fn a_size_keeping_change_rewrites_the_table_without_an_outer_update() {
    let mut t = TestDatapath::load();
    let mut applied = Applied::default();
    serve(&mut t.maps, &mut applied, &[0, 1]);
    let map_id = pinned_map_id(&t, &t.maps);
    let before = t.maps.maglev_outer_updates();
    let waits = t.maps.table_reader_waits();
    let counted = waits.counted.load(Ordering::Relaxed);

    serve(&mut t.maps, &mut applied, &[0, 1, 2]);
    assert_eq!(pinned_map_id(&t, &t.maps), map_id, "rewritten in place");
    assert_eq!(t.maps.maglev_outer_updates(), before, "no outer update");
    let table = table_addresses(&t.maps);
    for sport in 30_000..30_200 {
        let expected = table[(hash(sport) % table.len() as u32) as usize];
        assert_eq!(syn(&t, sport), expected, "sport {sport}");
    }
    assert!((30_000..30_200).any(|s| table[(hash(s) % 1021) as usize] == pod(2)));

    serve(&mut t.maps, &mut applied, &[0, 1]);
    assert_eq!(pinned_map_id(&t, &t.maps), map_id, "rewritten in place");
    assert_eq!(t.maps.maglev_outer_updates(), before, "no outer update");
    assert_eq!(
        waits.counted.load(Ordering::Relaxed),
        counted + 1,
        "one wait for readers, before the removal"
    );
    assert_eq!(waits.grace_periods.load(Ordering::Relaxed), 0);
    assert!(!backend_addresses(&t.maps).values().any(|a| *a == pod(2)));
    for sport in 30_200..30_400 {
        let dst = syn(&t, sport);
        assert!(dst == pod(0) || dst == pod(1), "sport {sport}: {dst}");
    }

    let many: Vec<usize> = (0..150).collect();
    serve(&mut t.maps, &mut applied, &many);
    assert_ne!(pinned_map_id(&t, &t.maps), map_id, "a new size: swapped");
    assert!(t.maps.maglev_outer_updates() > before);
    let table = table_addresses(&t.maps);
    assert_eq!(table.len(), 15_013);
    for sport in 30_400..30_500 {
        let expected = table[(hash(sport) % table.len() as u32) as usize];
        assert_eq!(syn(&t, sport), expected, "sport {sport}");
    }
    assert_eq!(t.stat(Reason::DropBackendMissing), 0);
}

/// Rewrites in place under traffic: another writer flips the Service
/// between two sets of three 40 times, every flip in place (its pinned
/// map stays), while new flows keep coming; each flow goes where the
/// table of one set or the other says at its slot (a slot holds its old
/// id or its new one, never anything else), none is dropped, and the
/// removed backend of each flip is never reached once the flip returned.
#[test]
fn rewrites_in_place_under_traffic_give_every_flow_a_backend_of_either_table() {
    let mut t = TestDatapath::load();
    let mut applied = Applied::default();
    let sets = [vec![0, 1, 2], vec![0, 1, 3]];
    let mut tables = Vec::new();
    for set in &sets {
        serve(&mut t.maps, &mut applied, set);
        tables.push(table_addresses(&t.maps));
    }
    let size = tables[0].len() as u32;
    assert_eq!(size, tables[1].len() as u32);
    let mut writer = t.dp().maps().unwrap();
    let done = AtomicBool::new(false);
    let (kept_map, wrong) = std::thread::scope(|s| {
        let flips = s.spawn(|| {
            // The writer's first write swaps (it has not swapped this
            // table in itself), every later one is in place.
            serve(&mut writer, &mut applied, &sets[0]);
            let first = pinned_map_id(&t, &writer);
            let updates = writer.maglev_outer_updates();
            let waits = writer.table_reader_waits();
            for round in 1..=40 {
                serve(&mut writer, &mut applied, &sets[round % 2]);
            }
            done.store(true, Ordering::Relaxed);
            let outer = writer.maglev_outer_updates() - updates;
            let counted = waits.counted.load(Ordering::Relaxed);
            let grace_periods = waits.grace_periods.load(Ordering::Relaxed);
            (
                first == pinned_map_id(&t, &writer),
                counted + grace_periods,
                outer - grace_periods,
            )
        });
        let mut wrong: BTreeMap<u16, Ipv4Addr> = BTreeMap::new();
        let mut sport = 31_000u16;
        let mut sent = 0;
        while !done.load(Ordering::Relaxed) || sent < 200 {
            let slot = (hash(sport) % size) as usize;
            let dst = syn(&t, sport);
            if dst != tables[0][slot] && dst != tables[1][slot] {
                wrong.insert(sport, dst);
            }
            sent += 1;
            sport = sport.wrapping_add(1).max(31_000);
        }
        (flips.join().unwrap(), wrong)
    });
    assert_eq!(wrong, BTreeMap::new(), "flows outside both tables");
    assert!(kept_map.0, "every flip after the first was in place");
    assert_eq!(kept_map.1, 40, "one wait per flip (each removes a backend)");
    assert_eq!(kept_map.2, 0, "no outer update but a wait's fallback");
    assert_eq!(t.stat(Reason::DropBackendMissing), 0);
    for (round, removed) in [(1usize, pod(2)), (0, pod(3))] {
        serve(&mut t.maps, &mut applied, &sets[round]);
        for sport in 40_000..40_100 {
            assert_ne!(syn(&t, sport), removed, "round {round}, sport {sport}");
        }
        for (key, _) in t.maps.connections().unwrap() {
            t.maps.remove_connection(&key).unwrap();
        }
    }
}

/// A rewrite in place moves the connection table's recheck generation by
/// itself (the frontend's value may not change when its backends do, so
/// no frontend write would move it), and the table read back is the new
/// one, written by the same writer's `write_table` twice at one size.
#[test]
fn a_rewrite_in_place_moves_the_recheck_generation() {
    let mut t = TestDatapath::load();
    let a: Vec<u32> = (0..1021).map(|s| s % 2 + 1).collect();
    let b: Vec<u32> = (0..1021).map(|s| s % 3 + 1).collect();
    t.maps.write_table(5, &a).unwrap();
    let pin = tables_dir(&t.pin_dir).join("5");
    let map_id = MapData::from_pin(&pin).unwrap().info().unwrap().id();
    let (generation, updates) = (t.maps.ct_generation(), t.maps.maglev_outer_updates());
    t.maps.write_table(5, &b).unwrap();
    assert_eq!(t.maps.read_table(5).unwrap(), b);
    assert_eq!(
        MapData::from_pin(&pin).unwrap().info().unwrap().id(),
        map_id
    );
    assert_eq!(t.maps.maglev_outer_updates(), updates);
    assert_ne!(t.maps.ct_generation(), generation, "the generation moved");
}
