//! The order of the source-range writes around the frontend flips, in the
//! whole plan and in the plan of the changed ports.

use std::net::Ipv4Addr;

use crate::{
    datapath::{DatapathMaps, MemoryMaps},
    desired::incremental::Changes,
    model::{DesiredState, FrontendKind, Scope, SourceRange},
    plan::{
        Applied, Planner, apply,
        tests::{backend, desired, frontend, spec},
    },
};

fn range(a: u8, len: u8) -> SourceRange {
    SourceRange::new(Ipv4Addr::new(203, 0, 113, a), len).unwrap()
}

/// One LoadBalancer frontend of `s` with `ranges` (none: unfiltered), and
/// an unfiltered one of another port.
fn state(ranges: &[SourceRange]) -> DesiredState {
    let mut filtered = spec("s", &[backend(1, crate::model::Protocol::Tcp)]);
    filtered.kind = FrontendKind::LoadBalancer;
    filtered.source_ranges = ranges.to_vec();
    let other = spec("t", &[backend(2, crate::model::Protocol::Tcp)]);
    desired(&[
        (frontend(80, Scope::External), filtered),
        (frontend(81, Scope::External), other),
    ])
}

fn changed_port_s(before: &DesiredState, after: &DesiredState) -> Changes {
    let mut changes = Changes::default();
    for (fe, spec) in &after.frontends {
        if before.frontends.get(fe) != Some(spec) {
            changes.frontends.insert(*fe);
            changes.services.insert(spec.service.clone());
        }
    }
    changes
}

/// Position of the first log entry starting with `prefix`.
fn at(maps: &MemoryMaps, from: usize, prefix: &str) -> usize {
    maps.log[from..]
        .iter()
        .position(|entry| entry.starts_with(prefix))
        .map(|i| i + from)
        .unwrap_or_else(|| panic!("no {prefix} in {:?}", &maps.log[from..]))
}

/// kube-proxy's firewall chain exists from the rule that sends the
/// LoadBalancer IP to it: here the ranges are written before the frontend
/// carries the flag, and removed only after it has lost it; a change of
/// ranges adds the new before it removes the old. Both plans agree.
#[test]
fn ranges_are_written_before_the_flip_and_removed_after() {
    let steps = [
        state(&[range(0, 24)]),
        state(&[range(0, 25), range(128, 25)]),
        state(&[]),
        state(&[range(7, 32)]),
    ];
    let (mut maps, mut applied, mut planner) =
        (MemoryMaps::new(8), Applied::default(), Planner::new());
    let mut last = DesiredState::default();
    for (step, wanted) in steps.iter().enumerate() {
        let changes = changed_port_s(&last, wanted);
        let plan = planner.plan(wanted, &changes, &applied, maps.max_tables());
        let whole = crate::plan::plan(wanted, &applied, maps.max_tables());
        assert_eq!(plan.set_source_ranges, whole.set_source_ranges, "{step}");
        assert_eq!(
            plan.remove_source_ranges, whole.remove_source_ranges,
            "{step}"
        );
        let from = maps.log.len();
        apply(&plan, &mut maps, &mut applied).unwrap();
        assert_eq!(maps.dangling(), Vec::<String>::new(), "step {step}");
        let held: Vec<SourceRange> = maps.source_ranges.iter().map(|(_, r)| *r).collect();
        assert_eq!(
            held,
            wanted.frontends.values().next().unwrap().source_ranges
        );
        assert_eq!(applied.source_ranges, maps.source_ranges);
        match step {
            0 | 3 => assert!(at(&maps, from, "range") < at(&maps, from, "frontend 80")),
            1 => assert!(at(&maps, from, "range") < at(&maps, from, "-range")),
            _ => assert!(at(&maps, from, "frontend 80") < at(&maps, from, "-range")),
        }
        last = wanted.clone();
    }
    let again = planner.plan(&last, &Changes::default(), &applied, maps.max_tables());
    assert!(again.is_empty(), "{again}");
}
