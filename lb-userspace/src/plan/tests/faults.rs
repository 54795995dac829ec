//! An apply interrupted at any write leaves a datapath where every frontend
//! leads somewhere whole, and the agent's retry (re-read the maps, plan,
//! apply) converges on the state an uninterrupted apply reaches.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::datapath::codec::service_from_info;

const TABLES: u32 = 8;

fn tcp(last: u8) -> Backend {
    backend(last, Protocol::Tcp)
}

fn udp(last: u8) -> Backend {
    backend(last, Protocol::Udp)
}

fn before() -> DesiredState {
    desired(&[
        (
            frontend(80, Scope::Internal),
            spec("web", &[tcp(1), tcp(2), tcp(3)]),
        ),
        (
            frontend(80, Scope::External),
            spec("web", &[tcp(1), tcp(2), tcp(3)]),
        ),
        (udp_frontend(53), udp_spec("dns", &[udp(1), udp(2)])),
        (frontend(90, Scope::Internal), spec("old", &[tcp(4)])),
    ])
}

/// Every kind of write: new and removed backends, a new table, a shared
/// one reused, a new service, a removed service and frontend, a purge.
fn after() -> DesiredState {
    desired(&[
        (
            frontend(80, Scope::Internal),
            spec("web", &[tcp(1), tcp(2), tcp(5)]),
        ),
        (
            frontend(80, Scope::External),
            spec("web", &[tcp(1), tcp(2), tcp(5)]),
        ),
        (udp_frontend(53), udp_spec("dns", &[udp(1)])),
        (frontend(91, Scope::Internal), spec("api", &[tcp(4)])),
    ])
}

fn synced(state: &DesiredState) -> (MemoryMaps, Applied) {
    let mut maps = MemoryMaps::new(TABLES);
    let mut applied = Applied::default();
    sync(state, &mut maps, &mut applied);
    (maps, applied)
}

/// What each frontend serves, in terms independent of the ids chosen.
fn served(maps: &MemoryMaps) -> BTreeMap<Frontend4Key, (String, BTreeSet<Backend>, u32)> {
    maps.frontends
        .iter()
        .map(|(key, fe)| {
            let name = service_from_info(&maps.services[&fe.service_id])
                .map(|(name, _)| name.to_string())
                .unwrap_or_default();
            let backends = maps
                .table_of(key)
                .unwrap_or_default()
                .iter()
                .filter_map(|id| backend_from_value(&maps.backends[id]))
                .collect();
            (*key, (name, backends, fe.flags))
        })
        .collect()
}

/// The agent's planner, having planned and applied `before()`.
fn planner_after_before(maps: &mut MemoryMaps, applied: &mut Applied) -> Planner {
    let mut planner = Planner::new();
    let all = crate::desired::incremental::Changes::all();
    let first = planner.plan(&before(), &all, applied, TABLES);
    apply(&first, maps, applied).unwrap();
    planner
}

#[test]
fn an_interrupted_apply_leaves_whole_state_and_a_retry_converges() {
    let all = crate::desired::incremental::Changes::all();
    let (mut clean, mut clean_applied) = (MemoryMaps::new(TABLES), Applied::default());
    let mut clean_planner = planner_after_before(&mut clean, &mut clean_applied);
    let start = clean.writes();
    let whole = clean_planner.plan(&after(), &all, &clean_applied, TABLES);
    apply(&whole, &mut clean, &mut clean_applied).unwrap();
    let writes = clean.writes() - start;
    let kinds: BTreeSet<&str> = clean.log[start..]
        .iter()
        .filter_map(|write| write.split(' ').next())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "service",
            "backend",
            "table",
            "frontend",
            "-frontend",
            "purge",
            "-backend",
            "-service"
        ]),
        "the plan exercises every kind of write: {:?}",
        clean.log
    );

    for k in 0..writes {
        let (mut maps, mut applied) = (MemoryMaps::new(TABLES), Applied::default());
        let mut planner = planner_after_before(&mut maps, &mut applied);
        let dns = applied.services.iter().find(|(name, _)| name.name == "dns");
        let dns = *dns.expect("dns has an id").1;
        maps.fail_after(k);
        let first = planner.plan(&after(), &all, &applied, TABLES);
        assert!(
            apply(&first, &mut maps, &mut applied).is_err(),
            "write {k} did not fail"
        );
        assert_eq!(
            maps.dangling(),
            Vec::<String>::new(),
            "after failing write {k}"
        );

        // The agent's retry: what the maps hold, planned and applied again.
        let mut reread = Applied::reread(&maps, &applied).unwrap();
        planner.not_applied();
        let retry = planner.plan(&after(), &all, &reread, TABLES);
        apply(&retry, &mut maps, &mut reread).unwrap();
        assert_eq!(
            maps.dangling(),
            Vec::<String>::new(),
            "after retrying write {k}"
        );
        assert_eq!(served(&maps), served(&clean), "retry after write {k}");
        assert_eq!(
            maps.backends.values().collect::<BTreeSet<_>>(),
            clean.backends.values().collect::<BTreeSet<_>>(),
            "backends after write {k}"
        );
        // Purged once, or again by the retry: never lost (cleanup.go: dns's
        // flows to udp(2), no longer a serving endpoint of it).
        let purged: BTreeSet<_> = maps.purged_flows.iter().collect();
        assert_eq!(
            purged,
            BTreeSet::from([&(
                dns,
                lb_common::Backend4 {
                    flags: 0,
                    ..udp_value(2)
                }
            )]),
            "UDP purge, write {k}"
        );
        let again = planner.plan(&after(), &all, &reread, TABLES);
        assert!(again.is_empty(), "not converged after write {k}: {again}");
    }
}

/// Tables live before the failed apply that no frontend references now.
fn freed_tables(before: &Applied, maps: &MemoryMaps) -> BTreeSet<u32> {
    let live = |frontends: &mut dyn Iterator<Item = &lb_common::FrontendValue>| {
        frontends
            .filter(|fe| fe.backend_count > 0)
            .map(|fe| fe.table_id)
            .collect::<BTreeSet<u32>>()
    };
    let now = live(&mut maps.frontends.values());
    let then = live(&mut before.frontends.values());
    then.difference(&now).copied().collect()
}

/// An apply interrupted after its flips and removals, then a new change
/// before the retry: the table the removals freed (old's) stays
/// quarantined for that plan, since a packet may still be indexing it,
/// while the changed ports rewrite their own tables in place.
#[test]
fn tables_freed_by_an_interrupted_apply_stay_quarantined() {
    let (mut maps, mut applied) = synced(&before());
    let first = plan(&after(), &applied, TABLES);
    let up_to_removals = first.set_services.len()
        + first.set_backends.len()
        + first.write_tables.len()
        + first.set_frontends.len()
        + first.remove_frontends.len();
    maps.fail_after(up_to_removals);
    assert!(apply(&first, &mut maps, &mut applied).is_err());
    let freed = freed_tables(&applied, &maps);
    assert_eq!(freed.len(), 1, "the removal freed old's table");

    let mut reread = Applied::reread(&maps, &applied).unwrap();
    let changed_again = desired(&[
        (
            frontend(80, Scope::Internal),
            spec("web", &[tcp(1), tcp(6)]),
        ),
        (udp_frontend(53), udp_spec("dns", &[udp(1), udp(3)])),
        (frontend(92, Scope::Internal), spec("new", &[tcp(7)])),
    ]);
    let retry = plan(&changed_again, &reread, TABLES);
    assert_eq!(retry.write_tables.len(), 3);
    for table in &retry.write_tables {
        assert!(
            !freed.contains(&table.table_id),
            "table {} rewritten right after it was freed",
            table.table_id
        );
    }
    apply(&retry, &mut maps, &mut reread).unwrap();
    assert_eq!(maps.dangling(), Vec::<String>::new());
}

fn udp_value(last: u8) -> lb_common::Backend4 {
    crate::datapath::codec::backend_value(&udp(last), Default::default())
        .map(|mut v| {
            v.flags = lb_common::BE_FLAG_LOCAL;
            v
        })
        .unwrap()
}

#[test]
fn a_failed_write_is_reported_and_changes_nothing_after_it() {
    let (mut maps, mut applied) = synced(&before());
    let frontends = maps.frontends.clone();
    maps.fail_after(0);
    let plan = plan(&after(), &applied, TABLES);
    let err = apply(&plan, &mut maps, &mut applied).unwrap_err();
    assert!(err.to_string().contains("injected fault"), "{err}");
    assert_eq!(maps.frontends, frontends);
}

/// sync: a full sync of more tables than one write holds
/// (`TABLES_PER_WRITE`, each chunk's slots built just before it is
/// written), interrupted in its second chunk: no frontend is written yet
/// (every table goes before any frontend refers to it), so nothing
/// dangles, and the agent's retry (re-read the maps, plan the whole state
/// again, apply) programs every Service over its own backends.
#[test]
fn a_full_sync_interrupted_between_chunks_of_tables_is_replanned_whole() {
    use crate::plan::apply::TABLES_PER_WRITE;
    let count = TABLES_PER_WRITE + 44;
    let backends_of = |i: usize| [tcp(1 + (i % 200) as u8), tcp(201 + (i % 50) as u8)];
    let entries: Vec<_> = (0..count)
        .map(|i| {
            let port = 1000 + i as u16;
            let name = format!("svc-{i}");
            (
                frontend(port, Scope::Internal),
                spec(&name, &backends_of(i)),
            )
        })
        .collect();
    let state = desired(&entries);
    let max = count as u32 + 8;
    let mut maps = MemoryMaps::new(max);
    let mut applied = Applied::read(&maps).unwrap();
    let full = plan(&state, &applied, max);
    assert_eq!(full.write_tables.len(), count, "one table per Service");
    let into_second_chunk = TABLES_PER_WRITE + 10;
    maps.fail_after(full.set_services.len() + full.set_backends.len() + into_second_chunk);
    assert!(apply(&full, &mut maps, &mut applied).is_err());
    assert!(
        maps.tables.len() > TABLES_PER_WRITE,
        "the first chunk is written"
    );
    assert!(maps.frontends.is_empty(), "no frontend before every table");
    assert_eq!(maps.dangling(), Vec::<String>::new());

    let mut reread = Applied::reread(&maps, &applied).unwrap();
    let retry = plan(&state, &reread, max);
    assert_eq!(retry.problems, [], "{retry}");
    apply(&retry, &mut maps, &mut reread).unwrap();
    assert_eq!(maps.dangling(), Vec::<String>::new());
    assert_eq!(maps.frontends.len(), count);
    for i in [0, TABLES_PER_WRITE - 1, TABLES_PER_WRITE + 10, count - 1] {
        let port = 1000 + i as u16;
        let slots = maps.table_of(&frontend_key(&frontend(port, Scope::Internal)).unwrap());
        let selected: BTreeSet<Backend> = (0..slots.map_or(0, <[u32]>::len))
            .filter_map(|slot| backend_at(&maps, port, Scope::Internal, slot))
            .collect();
        assert_eq!(selected, BTreeSet::from(backends_of(i)), "Service {i}");
    }
    assert!(
        plan(&state, &reread, max).is_empty(),
        "nothing left to write"
    );
}

/// cleanup.go flushes the UDP flows of an endpoint that stopped serving a
/// Service. When the endpoint leaves the backends map in the same plan, the
/// datapath's recheck already moves each flow's next datagram
/// (`kernel_ct_recheck`), so the purge spares the walk of the connection
/// table and aborts the connected sockets alone; an endpoint another port
/// still lists keeps its id, its entries would still translate, and the
/// walk removes them.
#[test]
fn a_udp_purge_walks_the_connection_table_only_for_backends_that_stay() {
    use crate::datapath::PurgeScope;
    let all = crate::desired::incremental::Changes::all();
    let (mut maps, mut applied) = (MemoryMaps::new(TABLES), Applied::default());
    let mut planner = planner_after_before(&mut maps, &mut applied);
    let plan = planner.plan(&after(), &all, &applied, TABLES);
    apply(&plan, &mut maps, &mut applied).unwrap();
    assert_eq!(
        maps.purge_scopes,
        vec![PurgeScope::SocketsOnly],
        "udp(2) left dns and the maps"
    );

    let listed_twice = |dns: &[Backend]| {
        desired(&[
            (udp_frontend(53), udp_spec("dns", dns)),
            (udp_frontend(54), udp_spec("dns-tcp-fallback", &[udp(2)])),
        ])
    };
    let (mut maps, mut applied) = (MemoryMaps::new(TABLES), Applied::default());
    let mut planner = Planner::new();
    let first = planner.plan(&listed_twice(&[udp(1), udp(2)]), &all, &applied, TABLES);
    apply(&first, &mut maps, &mut applied).unwrap();
    let plan = planner.plan(&listed_twice(&[udp(1)]), &all, &applied, TABLES);
    apply(&plan, &mut maps, &mut applied).unwrap();
    assert_eq!(
        maps.purge_scopes,
        vec![PurgeScope::Everything],
        "udp(2) stays for port 54"
    );
    assert_eq!(maps.purged_flows.len(), 1);
}
