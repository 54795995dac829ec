//! Plans against the in-memory maps, which check the write-order
//! invariants on every write.

use std::{collections::BTreeSet, net::Ipv4Addr};

use lb_common::{MAGLEV_TABLE_SIZE, PROTO_UDP};

use super::*;
use crate::{
    datapath::{
        DatapathMaps, MemoryMaps,
        codec::{backend_from_value, frontend_entry, frontend_key},
    },
    model::{
        DesiredState, Endpoint, Frontend, FrontendKind, FrontendSpec, Protocol, Scope,
        ServicePortInfo, WhenEmpty,
    },
};

/// Which backend a frontend's table sends slot `slot` to.
pub(super) fn backend_at(
    maps: &MemoryMaps,
    port: u16,
    scope: Scope,
    slot: usize,
) -> Option<Backend> {
    let key = frontend_key(&frontend(port, scope)).unwrap();
    let id = maps.table_of(&key)?[slot];
    backend_from_value(&maps.backends[&id])
}

pub(super) fn frontend(port: u16, scope: Scope) -> Frontend {
    Frontend {
        addr: Ipv4Addr::new(192, 0, 2, 10).into(),
        port,
        protocol: Protocol::Tcp,
        scope,
    }
}

pub(super) fn backend(last: u8, protocol: Protocol) -> Backend {
    Backend {
        addr: Ipv4Addr::new(203, 0, 113, last).into(),
        port: 8080,
        protocol,
    }
}

pub(super) fn spec(name: &str, backends: &[Backend]) -> FrontendSpec {
    FrontendSpec {
        service: ServicePortName {
            namespace: "default".into(),
            name: name.into(),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
        },
        kind: FrontendKind::ClusterIp,
        endpoints: backends
            .iter()
            .map(|b| Endpoint {
                backend: *b,
                terminating: false,
                local: true,
                remote: false,
                target: None,
            })
            .collect(),
        when_empty: WhenEmpty::Reject,
        selection: String::new(),
        affinity_timeout_s: 0,
        source_ranges: Vec::new(),
        algorithm: Default::default(),
    }
}

pub(super) fn desired(entries: &[(Frontend, FrontendSpec)]) -> DesiredState {
    let services = entries
        .iter()
        .map(|(fe, spec)| {
            let info = ServicePortInfo {
                port: fe.port,
                external_policy_local: false,
                internal_policy_local: false,
                topology_aware: false,
            };
            (spec.service.clone(), info)
        })
        .collect();
    DesiredState {
        frontends: entries.iter().cloned().collect(),
        services,
        problems: vec![],
    }
}

fn sync(state: &DesiredState, maps: &mut MemoryMaps, applied: &mut Applied) -> Plan {
    let plan = plan(state, applied, maps.max_tables());
    assert_eq!(plan.problems, [], "{plan}");
    apply(&plan, maps, applied).expect("apply");
    plan
}

#[test]
fn first_sync_writes_service_backends_table_then_frontend() {
    let (a, b) = (backend(11, Protocol::Tcp), backend(12, Protocol::Tcp));
    let state = desired(&[(frontend(80, Scope::Internal), spec("web", &[a, b]))]);
    let mut maps = MemoryMaps::new(4);
    let mut applied = Applied::default();
    sync(&state, &mut maps, &mut applied);
    assert_eq!(
        maps.log,
        [
            "service 1",
            "backend 1",
            "backend 2",
            "table 0",
            "frontend 80",
            // The ClusterIP is allocated once its frontend serves.
            "clusterip 192.0.2.10"
        ]
    );
    let table = &maps.tables[&0];
    assert_eq!(table.len(), MAGLEV_TABLE_SIZE as usize);
    assert!(table.contains(&1) && table.contains(&2));
}

#[test]
fn unchanged_state_plans_nothing() {
    let state = desired(&[(
        frontend(80, Scope::Internal),
        spec("web", &[backend(11, Protocol::Tcp)]),
    )]);
    let mut maps = MemoryMaps::new(4);
    let mut applied = Applied::default();
    sync(&state, &mut maps, &mut applied);
    let again = plan(&state, &applied, 4);
    assert!(again.is_empty(), "{again}");
}

#[test]
fn frontends_with_the_same_backends_share_one_table() {
    let bs = [backend(11, Protocol::Tcp), backend(12, Protocol::Tcp)];
    let state = desired(&[
        (frontend(80, Scope::Internal), spec("web", &bs)),
        (frontend(80, Scope::External), spec("web", &bs)),
    ]);
    let mut maps = MemoryMaps::new(4);
    let mut applied = Applied::default();
    let plan = sync(&state, &mut maps, &mut applied);
    assert_eq!(plan.write_tables.len(), 1);
}

#[test]
fn a_change_writes_a_new_table_and_quarantines_the_old_one() {
    let (a, b, c) = (
        backend(11, Protocol::Tcp),
        backend(12, Protocol::Tcp),
        backend(13, Protocol::Tcp),
    );
    let mut maps = MemoryMaps::new(4);
    let mut applied = Applied::default();
    sync(
        &desired(&[(frontend(80, Scope::Internal), spec("web", &[a, b, c]))]),
        &mut maps,
        &mut applied,
    );
    maps.log.clear();
    let plan = sync(
        &desired(&[(frontend(80, Scope::Internal), spec("web", &[a, b]))]),
        &mut maps,
        &mut applied,
    );
    // New table in a fresh slot, flip, then the backend nothing uses goes.
    assert_eq!(maps.log, ["table 1", "frontend 80", "-backend 3"]);
    assert_eq!(plan.release_tables, [0]);
    // Slot 0 is quarantined for one sync, reusable after.
    let plan = sync(
        &desired(&[(frontend(80, Scope::Internal), spec("web", &[a]))]),
        &mut maps,
        &mut applied,
    );
    assert_eq!(plan.write_tables[0].table_id, 2);
    // Its quarantine over and not written again, slot 0 gives its memory
    // back (after the flip); slot 1 is the quarantined one now.
    assert!(
        maps.log.ends_with(&["-table 0".to_string()]),
        "{:?}",
        maps.log
    );
    assert_eq!(maps.tables.keys().copied().collect::<Vec<_>>(), [1, 2]);
    let plan = sync(
        &desired(&[(frontend(80, Scope::Internal), spec("web", &[b]))]),
        &mut maps,
        &mut applied,
    );
    assert_eq!(plan.write_tables[0].table_id, 0);
}

#[test]
fn removing_a_backend_keeps_the_others_slots() {
    let bs: Vec<Backend> = (11..=15).map(|i| backend(i, Protocol::Tcp)).collect();
    let mut maps = MemoryMaps::new(4);
    let mut applied = Applied::default();
    sync(
        &desired(&[(frontend(80, Scope::Internal), spec("web", &bs))]),
        &mut maps,
        &mut applied,
    );
    let before: Vec<_> = (0..MAGLEV_TABLE_SIZE as usize)
        .map(|s| backend_at(&maps, 80, Scope::Internal, s).unwrap())
        .collect();
    sync(
        &desired(&[(frontend(80, Scope::Internal), spec("web", &bs[..4]))]),
        &mut maps,
        &mut applied,
    );
    // Maglev moves the removed backend's slots, and only a few others.
    let survivors = before.iter().filter(|was| **was != bs[4]).count();
    let moved = before
        .iter()
        .enumerate()
        .filter(|(slot, was)| {
            **was != bs[4] && backend_at(&maps, 80, Scope::Internal, *slot).as_ref() != Some(*was)
        })
        .count();
    assert!(
        moved * 20 <= survivors,
        "{moved} of {survivors} surviving slots moved"
    );
}

#[test]
fn removed_udp_backends_have_their_connections_purged_tcp_do_not() {
    let (u1, u2) = (backend(11, Protocol::Udp), backend(12, Protocol::Udp));
    let (t1, t2) = (backend(21, Protocol::Tcp), backend(22, Protocol::Tcp));
    let mut maps = MemoryMaps::new(4);
    let mut applied = Applied::default();
    let dns = |bs: &[Backend]| {
        let mut s = spec("dns", bs);
        s.service.protocol = Protocol::Udp;
        s
    };
    let udp_fe = Frontend {
        protocol: Protocol::Udp,
        ..frontend(53, Scope::Internal)
    };
    sync(
        &desired(&[
            (udp_fe, dns(&[u1, u2])),
            (frontend(80, Scope::Internal), spec("web", &[t1, t2])),
        ]),
        &mut maps,
        &mut applied,
    );
    sync(
        &desired(&[
            (udp_fe, dns(&[u1])),
            (frontend(80, Scope::Internal), spec("web", &[t1])),
        ]),
        &mut maps,
        &mut applied,
    );
    assert_eq!(maps.purged.len(), 1);
    assert_eq!(maps.purged[0].proto, PROTO_UDP);
    assert_eq!(backend_from_value(&maps.purged[0]), Some(u2));
}

#[test]
fn a_restarted_agent_adopts_what_the_maps_hold_and_writes_nothing() {
    let (a, b) = (backend(11, Protocol::Tcp), backend(12, Protocol::Tcp));
    let state = desired(&[(frontend(80, Scope::Internal), spec("web", &[a, b]))]);
    let mut maps = MemoryMaps::new(4);
    let mut applied = Applied::default();
    sync(&state, &mut maps, &mut applied);
    let service_id = maps.frontends.values().next().unwrap().service_id;
    // A new agent knows only what the maps say.
    let mut restarted = Applied::read(&maps).unwrap();
    maps.log.clear();
    let replan = sync(&state, &mut maps, &mut restarted);
    assert!(replan.is_empty(), "{replan}");
    assert!(maps.log.is_empty(), "{:?}", maps.log);
    assert_eq!(
        maps.frontends.values().next().unwrap().service_id,
        service_id
    );
    // And it goes on from there: a change writes a new table beside the live one.
    let next = sync(
        &desired(&[(frontend(80, Scope::Internal), spec("web", &[a]))]),
        &mut maps,
        &mut restarted,
    );
    assert_eq!(next.write_tables[0].table_id, 1);
}

#[test]
fn a_live_table_the_agent_cannot_recognise_is_never_written() {
    let (a, b) = (backend(11, Protocol::Tcp), backend(12, Protocol::Tcp));
    let state = desired(&[(frontend(80, Scope::Internal), spec("web", &[a, b]))]);
    let mut maps = MemoryMaps::new(4);
    let mut applied = Applied::default();
    sync(&state, &mut maps, &mut applied);
    // Say an older agent version filled slots differently.
    maps.tables.get_mut(&0).unwrap().reverse();
    let mut restarted = Applied::read(&maps).unwrap();
    maps.log.clear();
    let replan = sync(&state, &mut maps, &mut restarted);
    // A new table (write_table asserts it is not the live one), then the flip.
    assert_eq!(maps.log, ["table 1", "frontend 80"]);
    assert_eq!(replan.release_tables, [0]);
    assert!(plan(&state, &restarted, 4).is_empty());
}

#[test]
fn empty_frontends_carry_their_verdict() {
    let mut dropping = spec("local", &[]);
    dropping.when_empty = WhenEmpty::Drop;
    let state = desired(&[
        (frontend(80, Scope::External), dropping),
        (frontend(81, Scope::External), spec("none", &[])),
    ]);
    let mut maps = MemoryMaps::new(4);
    let mut applied = Applied::default();
    let plan = sync(&state, &mut maps, &mut applied);
    assert!(plan.write_tables.is_empty());
    let fe = |port| {
        frontend_entry(&maps.frontends[&frontend_key(&frontend(port, Scope::External)).unwrap()])
    };
    assert_eq!(fe(80).when_empty, WhenEmpty::Drop);
    assert_eq!(fe(81).when_empty, WhenEmpty::Reject);
    assert_eq!(fe(80).backend_count, 0);
    assert_eq!(fe(80).kind, Some(FrontendKind::ClusterIp));
}

#[test]
fn removed_frontends_and_services_go_after_the_flips() {
    let a = backend(11, Protocol::Tcp);
    let mut maps = MemoryMaps::new(4);
    let mut applied = Applied::default();
    sync(
        &desired(&[(frontend(80, Scope::Internal), spec("old", &[a]))]),
        &mut maps,
        &mut applied,
    );
    maps.log.clear();
    sync(
        &desired(&[(frontend(81, Scope::Internal), spec("new", &[a]))]),
        &mut maps,
        &mut applied,
    );
    assert_eq!(
        maps.log,
        ["service 2", "frontend 81", "-frontend 80", "-service 1"]
    );
}

mod faults;
mod problems;

/// A Service port that takes over a frontend carries its id (restart
/// adoption); the port that had it, back later, gets another id, not the
/// one now in use (two ports on one id would overwrite each other's name).
#[test]
fn an_id_taken_over_by_another_port_is_not_the_old_ports_any_more() {
    let mut maps = MemoryMaps::new(4);
    let mut applied = Applied::default();
    let (a, b) = (backend(11, Protocol::Tcp), backend(12, Protocol::Tcp));
    sync(
        &desired(&[(frontend(80, Scope::Internal), spec("old", &[a]))]),
        &mut maps,
        &mut applied,
    );
    sync(
        &desired(&[(frontend(80, Scope::Internal), spec("new", &[b]))]),
        &mut maps,
        &mut applied,
    );
    sync(
        &desired(&[
            (frontend(80, Scope::Internal), spec("new", &[b])),
            (frontend(81, Scope::Internal), spec("old", &[a])),
        ]),
        &mut maps,
        &mut applied,
    );
    let ids: BTreeSet<u32> = maps.frontends.values().map(|fe| fe.service_id).collect();
    assert_eq!(ids.len(), 2, "{:?}", maps.frontends);
    assert_eq!(maps.services.len(), 2);
    assert!(applied.index_is_consistent(4));
}
