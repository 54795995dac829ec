//! A Service port that cannot be planned is a problem of the plan: it keeps
//! what it had and every other change goes through.

use std::net::Ipv6Addr;

use lb_common::MAX_SERVICES;

use super::*;
use crate::datapath::codec::{CodecError, service_info};

fn entries(count: u16) -> Vec<(Frontend, FrontendSpec)> {
    (0..count)
        .map(|i| {
            (
                frontend(80 + i, Scope::Internal),
                spec(&format!("s{i}"), &[backend(11 + i as u8, Protocol::Tcp)]),
            )
        })
        .collect()
}

#[test]
fn running_out_of_tables_skips_that_service_only() {
    let mut maps = MemoryMaps::new(4);
    let mut applied = Applied::default();
    let plan = plan(&desired(&entries(5)), &applied, 4);
    let [problem] = plan.problems.as_slice() else {
        panic!("{:?}", plan.problems);
    };
    assert_eq!(problem.object, "Service default/s4");
    assert!(
        problem
            .reason
            .starts_with("port http (TCP): all 4 Maglev tables are in use")
            && problem.reason.contains("--max-tables")
            && problem.reason.ends_with("until then it is not served"),
        "{problem}"
    );
    assert_eq!(plan.set_frontends.len(), 4);
    apply(&plan, &mut maps, &mut applied).unwrap();
    assert_eq!(maps.dangling(), Vec::<String>::new());
    // Nothing of the skipped port was written, not even its backend.
    assert_eq!((maps.services.len(), maps.backends.len()), (4, 4));
    assert!(plan.new_services.iter().all(|(name, _)| name.name != "s4"));
}

#[test]
fn a_serving_service_that_cannot_be_planned_keeps_its_state_until_it_can() {
    let (a, b, c) = (
        backend(11, Protocol::Tcp),
        backend(12, Protocol::Tcp),
        backend(13, Protocol::Tcp),
    );
    let mut maps = MemoryMaps::new(2);
    let mut applied = Applied::default();
    let web = |bs: &[Backend]| (frontend(80, Scope::Internal), spec("web", bs));
    let api = (frontend(81, Scope::Internal), spec("api", &[c]));
    sync(
        &desired(&[web(&[a, b]), api.clone()]),
        &mut maps,
        &mut applied,
    );
    let web_before = maps.frontends.clone();

    // web's external frontend needs a second table (another backend set)
    // and both are in use; "new" needs none.
    let newcomer = (frontend(82, Scope::Internal), spec("new", &[]));
    let web_external = (frontend(80, Scope::External), spec("web", &[a]));
    let next = desired(&[
        web(&[a, b]),
        web_external.clone(),
        api.clone(),
        newcomer.clone(),
    ]);
    let skipped = plan(&next, &applied, 2);
    let [problem] = skipped.problems.as_slice() else {
        panic!("{:?}", skipped.problems);
    };
    assert_eq!(problem.object, "Service default/web");
    assert!(
        problem
            .reason
            .ends_with("its 1 frontend(s) keep their last state"),
        "{problem}"
    );
    apply(&skipped, &mut maps, &mut applied).unwrap();
    assert_eq!(maps.dangling(), Vec::<String>::new());
    let key = frontend_key(&frontend(80, Scope::Internal)).unwrap();
    assert_eq!(
        maps.frontends[&key], web_before[&key],
        "web keeps its frontend"
    );
    assert!(
        maps.table_of(&key)
            .unwrap()
            .iter()
            .any(|id| backend_from_value(&maps.backends[id]) == Some(b))
    );
    assert!(
        maps.frontends
            .contains_key(&frontend_key(&newcomer.0).unwrap())
    );

    // api goes away: its table is released, quarantined for one more plan
    // (applied even with nothing to write, as the agent does), then web
    // gets it.
    let without_api = desired(&[web(&[a, b]), web_external, newcomer]);
    let released = plan(&without_api, &applied, 2);
    assert_eq!(released.release_tables, [1]);
    assert_eq!(released.problems.len(), 1, "table 1 is still referenced");
    apply(&released, &mut maps, &mut applied).unwrap();
    let quarantined = plan(&without_api, &applied, 2);
    assert!(quarantined.is_empty() && quarantined.problems.len() == 1);
    apply(&quarantined, &mut maps, &mut applied).unwrap();
    let healed = plan(&without_api, &applied, 2);
    assert_eq!(healed.problems, []);
    assert_eq!(healed.write_tables[0].table_id, 1);
    apply(&healed, &mut maps, &mut applied).unwrap();
    assert_eq!(maps.dangling(), Vec::<String>::new());
    assert_eq!(backend_at(&maps, 80, Scope::External, 0), Some(a));
    assert_eq!(maps.frontends[&key], web_before[&key], "untouched");
    assert!(plan(&without_api, &applied, 2).is_empty());
}

#[test]
fn an_address_the_maps_cannot_hold_is_a_problem_not_a_stall() {
    let mut v6 = spec("six", &[]);
    v6.service.name = "six".into();
    let v6_frontend = Frontend {
        addr: Ipv6Addr::LOCALHOST.into(),
        ..frontend(443, Scope::Internal)
    };
    let state = desired(&[
        (v6_frontend, v6),
        (
            frontend(80, Scope::Internal),
            spec("web", &[backend(11, Protocol::Tcp)]),
        ),
    ]);
    let plan = plan(&state, &Applied::default(), 4);
    assert_eq!(plan.problems.len(), 1);
    let expected = PlanError::Codec(CodecError::Family(Ipv6Addr::LOCALHOST.into()));
    assert!(
        plan.problems[0].reason.contains(&expected.to_string()),
        "{:?}",
        plan.problems
    );
    assert_eq!(plan.set_frontends.len(), 1);
}

#[test]
fn a_backend_the_maps_cannot_hold_skips_the_services_using_it() {
    let six = Backend {
        addr: Ipv6Addr::LOCALHOST.into(),
        ..backend(1, Protocol::Tcp)
    };
    let ok = backend(11, Protocol::Tcp);
    let state = desired(&[
        (frontend(80, Scope::Internal), spec("mixed", &[ok, six])),
        (frontend(81, Scope::Internal), spec("fine", &[ok])),
    ]);
    let plan = plan(&state, &Applied::default(), 4);
    assert_eq!(plan.problems.len(), 1);
    assert_eq!(plan.problems[0].object, "Service default/mixed");
    assert_eq!(plan.set_backends.len(), 1);
    assert_eq!(plan.set_frontends.len(), 1);
}

fn info(name: &str) -> lb_common::ServiceInfo {
    let port = ServicePortInfo {
        port: 80,
        external_policy_local: false,
        internal_policy_local: false,
        topology_aware: false,
        listed: Vec::new(),
    };
    service_info(&spec(name, &[]).service, &port)
}

/// Service ids index the per-service counter array (`MAX_SERVICES` slots),
/// so the last id handed out is `MAX_SERVICES - 1` and one more port is a
/// problem, not an id without counters.
#[test]
fn service_ids_end_where_the_counter_array_ends() {
    assert_eq!(MAX_SERVICE_ID, MAX_SERVICES - 1);
    let mut applied = Applied::default();
    for id in 1..MAX_SERVICE_ID {
        let name = format!("old{id}");
        applied.service_infos.insert(id, info(&name));
        applied.services.insert(spec(&name, &[]).service, id);
    }
    // As `Applied::read` would have indexed them.
    applied.index = super::super::index::Index::build(&applied, 4);
    let state = desired(&[
        (frontend(80, Scope::Internal), spec("last", &[])),
        (frontend(81, Scope::Internal), spec("over", &[])),
    ]);
    let plan = plan(&state, &applied, 4);
    assert_eq!(
        plan.new_services,
        [(spec("last", &[]).service, MAX_SERVICE_ID)]
    );
    let [problem] = plan.problems.as_slice() else {
        panic!("{:?}", plan.problems);
    };
    assert_eq!(problem.object, "Service default/over");
    assert!(
        problem
            .reason
            .contains(&PlanError::ServicesExhausted.to_string())
    );
}

/// An older agent may have left a service id with no counter slot: the
/// port moves to a usable id.
#[test]
fn a_service_id_beyond_the_counters_is_replaced() {
    let state = desired(&[(frontend(80, Scope::Internal), spec("web", &[]))]);
    let mut maps = MemoryMaps::new(4);
    sync(&state, &mut maps, &mut Applied::default());
    let (old_id, old_info) = maps.services.pop_first().unwrap();
    maps.services.insert(MAX_SERVICES, old_info);
    for fe in maps.frontends.values_mut() {
        assert_eq!(fe.service_id, old_id);
        fe.service_id = MAX_SERVICES;
    }
    let mut restarted = Applied::read(&maps).unwrap();
    let plan = sync(&state, &mut maps, &mut restarted);
    assert_eq!(plan.remove_services, [MAX_SERVICES]);
    assert!(maps.frontends.values().all(|fe| fe.service_id == 1));
    assert_eq!(maps.dangling(), Vec::<String>::new());
}
