//! Plans against the in-memory maps, which check the write-order
//! invariants on every write.

use std::{collections::BTreeSet, net::Ipv4Addr};

use lb_common::MAGLEV_TABLE_SIZE;

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

/// A UDP ClusterIP frontend (internal scope) on `port`.
pub(super) fn udp_frontend(port: u16) -> Frontend {
    Frontend {
        protocol: Protocol::Udp,
        ..frontend(port, Scope::Internal)
    }
}

/// [`spec`] for a UDP Service port.
pub(super) fn udp_spec(name: &str, backends: &[Backend]) -> FrontendSpec {
    let mut s = spec(name, backends);
    s.service.protocol = Protocol::Udp;
    s
}

/// The desired state of `entries`, each Service port listing (serving)
/// the endpoints its frontends chose.
pub(super) fn desired(entries: &[(Frontend, FrontendSpec)]) -> DesiredState {
    let mut services: std::collections::BTreeMap<ServicePortName, ServicePortInfo> =
        std::collections::BTreeMap::new();
    for (fe, spec) in entries {
        let info = services
            .entry(spec.service.clone())
            .or_insert_with(|| ServicePortInfo {
                port: fe.port,
                external_policy_local: false,
                internal_policy_local: false,
                topology_aware: false,
                listed: Vec::new(),
            });
        for endpoint in &spec.endpoints {
            let listed = crate::model::Listed {
                backend: endpoint.backend,
                serving: true,
            };
            if let Err(at) = info.listed.binary_search(&listed) {
                info.listed.insert(at, listed);
            }
        }
    }
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

/// A changed backend set keeps its Service port's table id: the new table
/// is swapped in at the same id (no packet can meet another Service's
/// table there), so nothing waits; only an id its port stops using is
/// quarantined for one plan before another port takes it.
#[test]
fn a_change_rewrites_the_table_in_place_and_only_a_freed_id_waits() {
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
    // The same id rewritten, the flip (its backend count), then the
    // backend nothing uses goes; nothing is released.
    assert_eq!(maps.log, ["table 0", "frontend 80", "-backend 3"]);
    assert_eq!(plan.release_tables, Vec::<u32>::new());
    // web goes and api comes in the same plan: api cannot take web's id
    // (still referenced until the flips), nor in the next plan (a packet
    // may have read web's frontend just before its removal).
    let api = |bs: &[Backend]| desired(&[(frontend(81, Scope::Internal), spec("api", bs))]);
    let plan = sync(&api(&[a]), &mut maps, &mut applied);
    assert_eq!(plan.write_tables[0].table_id, 1);
    assert_eq!(plan.release_tables, [0]);
    let plan = sync(&api(&[b]), &mut maps, &mut applied);
    assert_eq!(plan.write_tables[0].table_id, 1, "rewritten in place");
    // Its quarantine over, table 0 gives its memory back.
    assert!(
        maps.log.ends_with(&["-table 0".to_string()]),
        "{:?}",
        maps.log
    );
    assert_eq!(maps.tables.keys().copied().collect::<Vec<_>>(), [1]);
    let both = desired(&[
        (frontend(81, Scope::Internal), spec("api", &[b])),
        (frontend(82, Scope::Internal), spec("web", &[c])),
    ]);
    let plan = sync(&both, &mut maps, &mut applied);
    assert_eq!(plan.write_tables[0].table_id, 0, "reusable now");
}

/// Two Services over the same backends get a table each: a change of one
/// rewrites its own in place and never touches the other's.
#[test]
fn services_with_the_same_backends_never_share_a_table() {
    let (a, b) = (backend(11, Protocol::Tcp), backend(12, Protocol::Tcp));
    let two = |web: &[Backend]| {
        desired(&[
            (frontend(80, Scope::Internal), spec("web", web)),
            (frontend(81, Scope::Internal), spec("api", &[a, b])),
        ])
    };
    let mut maps = MemoryMaps::new(4);
    let mut applied = Applied::default();
    let plan = sync(&two(&[a, b]), &mut maps, &mut applied);
    assert_eq!(plan.write_tables.len(), 2);
    let table = |maps: &MemoryMaps, port| {
        maps.frontends[&frontend_key(&frontend(port, Scope::Internal)).unwrap()].table_id
    };
    assert_ne!(table(&maps, 80), table(&maps, 81));
    let api_table = maps.tables[&table(&maps, 81)].clone();
    maps.log.clear();
    sync(&two(&[a]), &mut maps, &mut applied);
    assert_eq!(
        maps.log,
        [format!("table {}", table(&maps, 80)), "frontend 80".into()]
    );
    assert_eq!(maps.tables[&table(&maps, 81)], api_table);
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
    // And it goes on from there: a change rewrites the adopted table, its
    // Service port's own, in place.
    let next = sync(
        &desired(&[(frontend(80, Scope::Internal), spec("web", &[a]))]),
        &mut maps,
        &mut restarted,
    );
    assert_eq!(next.write_tables[0].table_id, 0);
}

/// A live table the agent cannot recognise (an older version filled it
/// otherwise) that one Service port selects from is that port's: it is
/// rewritten in place, and the frontend needs no flip.
#[test]
fn a_live_table_the_agent_cannot_recognise_is_rewritten_by_its_port() {
    let (a, b) = (backend(11, Protocol::Tcp), backend(12, Protocol::Tcp));
    let state = desired(&[(frontend(80, Scope::Internal), spec("web", &[a, b]))]);
    let mut maps = MemoryMaps::new(4);
    let mut applied = Applied::default();
    sync(&state, &mut maps, &mut applied);
    maps.tables.get_mut(&0).unwrap().reverse();
    let mut restarted = Applied::read(&maps).unwrap();
    maps.log.clear();
    let replan = sync(&state, &mut maps, &mut restarted);
    assert_eq!(maps.log, ["table 0"]);
    assert_eq!(replan.release_tables, Vec::<u32>::new());
    assert!(plan(&state, &restarted, 4).is_empty());
}

/// An older agent shared one table between Services with the same
/// backends. After the upgrade neither may rewrite it (the other's
/// packets read it): each takes a table of its own, with the same
/// contents (so new flows keep their backends), and the shared one is
/// released once nothing references it.
#[test]
fn a_table_an_older_agent_shared_between_services_is_never_rewritten() {
    let (a, b) = (backend(11, Protocol::Tcp), backend(12, Protocol::Tcp));
    let mut maps = MemoryMaps::new(4);
    let mut applied = Applied::default();
    let web = desired(&[(frontend(80, Scope::Internal), spec("web", &[a, b]))]);
    sync(&web, &mut maps, &mut applied);
    // The older layout: api's frontend on web's table.
    let api = (frontend(81, Scope::Internal), spec("api", &[a, b]));
    let mut value = maps.frontends.values().next().copied().unwrap();
    value.service_id = 2;
    let api_key = frontend_key(&api.0).unwrap();
    maps.frontends.insert(api_key, value);
    let port = crate::model::ServicePortInfo {
        port: 81,
        external_policy_local: false,
        internal_policy_local: false,
        topology_aware: false,
        listed: Vec::new(),
    };
    let info = crate::datapath::codec::service_info(&api.1.service, &port);
    maps.services.insert(2, info);
    let shared = maps.tables[&0].clone();
    let mut restarted = Applied::read(&maps).unwrap();
    maps.log.clear();
    let both = desired(&[(frontend(80, Scope::Internal), spec("web", &[a, b])), api]);
    let upgrade = sync(&both, &mut maps, &mut restarted);
    let tables: BTreeSet<u32> = upgrade.write_tables.iter().map(|t| t.table_id).collect();
    assert_eq!(tables, BTreeSet::from([1, 2]), "{upgrade}");
    assert!(upgrade.write_tables.iter().all(|t| t.slots() == shared));
    assert_eq!(upgrade.release_tables, [0]);
    assert!(plan(&both, &restarted, 4).is_empty());
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
    // new has a table of its own (Services never share one), old's goes
    // one plan later.
    assert_eq!(
        maps.log,
        [
            "service 2",
            "table 1",
            "frontend 81",
            "-frontend 80",
            "-service 1"
        ]
    );
}

mod faults;
mod listed;
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
