//! The planner's choice between the whole plan and the changed ports',
//! and the cases the random sequences of the tracker's property test
//! reach rarely: shared backends, ports waiting for a table, a failed
//! apply. The property test itself (the plan of the changes against the
//! whole plan, over random sequences of Services and slices) is in
//! `desired::incremental::tests`, where the tracker's changes come from.

use super::super::tests::{backend, desired, frontend, spec};
use super::*;
use crate::{
    datapath::{DatapathMaps, MemoryMaps, codec::backend_from_value},
    model::{Backend, Frontend, FrontendSpec, Protocol, Scope},
    plan::apply,
};

/// The changes of replacing `before` by `after` (every frontend and port
/// whose spec differs), as the tracker reports them.
fn changes(before: &DesiredState, after: &DesiredState) -> Changes {
    let mut changes = Changes::default();
    let keys = before.frontends.keys().chain(after.frontends.keys());
    for frontend in keys {
        let (old, new) = (
            before.frontends.get(frontend),
            after.frontends.get(frontend),
        );
        if old != new {
            changes.frontends.insert(*frontend);
            let owners = old.into_iter().chain(new).map(|spec| spec.service.clone());
            changes.services.extend(owners);
        }
    }
    changes
}

fn ports(count: u16, extra: &[Backend]) -> Vec<(Frontend, FrontendSpec)> {
    (0..count)
        .map(|i| {
            let mut backends = vec![backend(10 + i as u8, Protocol::Tcp)];
            backends.extend_from_slice(extra);
            let name = format!("s{i}");
            (frontend(80 + i, Scope::Internal), spec(&name, &backends))
        })
        .collect()
}

struct Agent {
    maps: MemoryMaps,
    applied: Applied,
    planner: Planner,
    last: DesiredState,
}

impl Agent {
    fn new(max_tables: u32) -> Agent {
        Agent {
            maps: MemoryMaps::new(max_tables),
            applied: Applied::default(),
            planner: Planner::new(),
            last: DesiredState::default(),
        }
    }

    fn sync(&mut self, state: DesiredState) -> Plan {
        let changes = changes(&self.last, &state);
        let max_tables = self.maps.max_tables();
        let plan = self
            .planner
            .plan(&state, &changes, &self.applied, max_tables);
        apply(&plan, &mut self.maps, &mut self.applied).expect("applied");
        assert_eq!(self.maps.dangling(), Vec::<String>::new());
        assert!(self.applied.index_is_consistent(max_tables));
        self.last = state;
        plan
    }

    fn flags_of(&self, wanted: Backend) -> u8 {
        let found = self.maps.backends.values();
        let mut found = found.filter(|value| backend_from_value(value) == Some(wanted));
        found.next().expect("the backend is in the maps").flags
    }
}

/// One port's backends change among 50: one port planned, its table
/// rewritten in place (same id, same backend count: the frontend needs
/// no flip), nothing else touched.
#[test]
fn one_changed_port_among_many_is_planned_alone() {
    let mut agent = Agent::new(64);
    let first = agent.sync(desired(&ports(50, &[])));
    assert!(agent.planner.stats().whole, "the first plan is whole");
    assert_eq!(first.set_frontends.len(), 50);
    let mut changed = ports(50, &[]);
    changed[17].1 = spec("s17", &[backend(200, Protocol::Tcp)]);
    let plan = agent.sync(desired(&changed));
    assert_eq!(
        agent.planner.stats(),
        PlanStats {
            whole: false,
            ports: 1
        }
    );
    assert_eq!(plan.set_frontends.len(), 0, "{plan}");
    assert_eq!(plan.write_tables.len(), 1);
    assert_eq!(plan.release_tables, Vec::<u32>::new(), "rewritten in place");
    assert_eq!(plan.remove_backends.len(), 1, "so does the old backend");
    let nothing = agent.sync(desired(&changed));
    assert!(nothing.is_empty(), "{nothing}");
    assert_eq!(agent.planner.stats().ports, 0);
}

/// A backend's flag holds only if it holds for every frontend using it:
/// when the only port that had it terminating (kube-proxy's fallback to
/// terminating endpoints) drops it, the unchanged port's view is written.
#[test]
fn a_shared_backend_takes_the_flags_of_the_ports_still_using_it() {
    let shared = backend(99, Protocol::Tcp);
    let mut agent = Agent::new(8);
    let mut state = ports(2, &[shared]);
    for endpoint in &mut state[1].1.endpoints {
        endpoint.local = false;
    }
    agent.sync(desired(&state));
    let local = lb_common::BE_FLAG_LOCAL;
    assert_eq!(agent.flags_of(shared) & local, 0, "one user is not local");
    state[1].1 = spec("s1", &[backend(11, Protocol::Tcp)]);
    let plan = agent.sync(desired(&state));
    assert!(!agent.planner.stats().whole);
    assert_eq!(agent.flags_of(shared) & local, local, "{plan}");
}

/// A port that finds no free table is retried at every sync, and planned
/// once the quarantine of a freed table has ended, with nothing else
/// changing meanwhile.
#[test]
fn a_port_waiting_for_a_table_is_retried_until_it_gets_one() {
    let mut agent = Agent::new(2);
    let plan = agent.sync(desired(&ports(3, &[])));
    assert_eq!(plan.problems.len(), 1, "two tables for three ports");
    let mut fewer = ports(3, &[]);
    fewer.remove(0);
    // Freed by this plan, quarantined for the next one.
    for _ in 0..2 {
        let plan = agent.sync(desired(&fewer));
        assert_eq!(plan.problems.len(), 1, "the freed table is in quarantine");
    }
    let plan = agent.sync(desired(&fewer));
    assert_eq!(plan.problems, vec![], "{plan}");
    assert_eq!(plan.set_frontends.len(), 1);
    assert!(!agent.planner.stats().whole);
    assert_eq!(agent.maps.frontends.len(), 2);
}

/// After an apply that failed part way the maps are read again and the
/// next plan is whole: the changes it was made for are not lost.
#[test]
fn after_a_failed_apply_the_next_plan_is_whole() {
    let mut agent = Agent::new(8);
    agent.sync(desired(&ports(3, &[])));
    let changed = desired(&ports(3, &[backend(77, Protocol::Tcp)]));
    let plan = agent
        .planner
        .plan(&changed, &changes(&agent.last, &changed), &agent.applied, 8);
    agent.maps.fail_after(2);
    assert!(apply(&plan, &mut agent.maps, &mut agent.applied).is_err());
    agent.applied = Applied::reread(&agent.maps, &agent.applied).expect("reread");
    agent.planner.not_applied();
    agent.last = changed.clone();
    agent.sync(changed.clone());
    assert!(agent.planner.stats().whole);
    let again = agent.sync(changed);
    assert!(again.is_empty(), "{again}");
}
