//! The control plane's own work for one EndpointSlice change, in process:
//! the desired state computed whole (what every sync did before the
//! incremental tracker) against the tracker's per-Service update, and the
//! plan that follows. No kernel, no agent process: it isolates the part of
//! "one change at 10,000 Services" that grows with the Services.

use std::{sync::Arc, time::Instant};

use anyhow::{Result, bail};
use lb::{
    datapath::{DatapathMaps, MemoryMaps},
    desired::{self, Holders, Rules, incremental::Tracker},
    model::{DesiredState, NodeFacts},
    plan::{self, Applied, Planner},
    source::manifests::parse_documents,
};

use crate::{BenchOptions, fixture::manifests_text, report::Section};

const SIZES: [usize; 3] = [1, 1_000, 10_000];

pub const DESIRED: &str = "one slice change: desired state";
pub const PLAN: &str = "one slice change: plan";
pub const FULL: &str = "full computation (before)";
pub const INCREMENTAL: &str = "incremental tracker (after), manifests";
pub const INCREMENTAL_API: &str = "incremental tracker (after), API objects";
pub const WHOLE_PLAN: &str = "plan::plan, the whole state (before)";
pub const PLANNER: &str = "plan::Planner, the changed ports (after)";

const METHOD: &str = "The control-plane fixture's manifests (`fixture::manifests_text`: the \
target and empty Services, then filler Services with their endpoints), parsed once and \
programmed into the in-memory datapath (`MemoryMaps`). Then one EndpointSlice changes (a \
filler's first endpoint moves to another address) and, each timed alone: the desired state \
computed whole (`desired::compute` with the holders the programmed frontends give, as each sync \
did before) and by the tracker (`desired::incremental::Tracker::update_shared`, as the agent calls it, warmed on the state \
before the change, as the agent's is), for manifests (no versions: each object is hashed whole to see what changed) and for API objects (every object given a uid and a resourceVersion, the changed slice's bumped, as the API server does), then the plan against what is programmed: \
the whole state's (`plan::plan`, every sync before the planner) and the changed ports' \
(`plan::Planner::plan` with the tracker's changes, as the agent plans; its plan is the one applied). The change alternates between two addresses, so every sample is a real \
change. The agent's path (tracker, planner, apply) is timed in a loop of its own, as the agent \
runs it, then two untimed changes prove that both paths give the same state and frontend writes, \
then the path before them is timed in its own loop (interleaved, the whole computation's frees \
were timed in the next tracker sample as the allocator consolidating them: perf showed glibc's \
malloc_consolidate and free leading that sample). Release build, one process, no kernel: the source's snapshot, the apply and the \
agent's wake-up are not in these figures (the control-plane section measures them end to end).";

pub fn run(options: &BenchOptions) -> Result<Section> {
    let mut section = Section::new("Control plane: the work of one change", METHOD);
    let samples = if options.quick { 3 } else { 15 };
    for n in options.service_counts(&SIZES) {
        let took = measure(n, samples, false)?;
        section.figure(DESIRED, FULL, n, "ms", &took.full);
        section.figure(DESIRED, INCREMENTAL, n, "ms", &took.incremental);
        section.figure(PLAN, WHOLE_PLAN, n, "ms", &took.plan);
        section.figure(PLAN, PLANNER, n, "ms", &took.planner);
        let api = measure(n, samples, true)?;
        section.figure(DESIRED, INCREMENTAL_API, n, "ms", &api.incremental);
    }
    for n in [1_000, 10_000] {
        section.ratio(
            &format!("desired state, full / incremental (manifests), {n} Services"),
            (DESIRED, FULL, n),
            (DESIRED, INCREMENTAL, n),
        );
        section.ratio(
            &format!("desired state, full / incremental (API objects), {n} Services"),
            (DESIRED, FULL, n),
            (DESIRED, INCREMENTAL_API, n),
        );
        section.ratio(
            &format!("plan, whole / changed ports, {n} Services"),
            (PLAN, WHOLE_PLAN, n),
            (PLAN, PLANNER, n),
        );
    }
    Ok(section)
}

/// Milliseconds per sample of each path.
#[derive(Default)]
pub struct Took {
    pub full: Vec<f64>,
    pub incremental: Vec<f64>,
    pub plan: Vec<f64>,
    pub planner: Vec<f64>,
}

/// `api`: the objects carry a uid and a resourceVersion, as from the API.
pub fn measure(services: usize, samples: usize, api: bool) -> Result<Took> {
    let mut set = parse_documents("services.yaml", &manifests_text(services));
    if !set.problems.is_empty() {
        bail!("the fixture has problems: {:?}", set.problems);
    }
    if api {
        let metas = (set
            .services
            .iter_mut()
            .map(|s| &mut Arc::make_mut(s).metadata))
        .chain(
            set.slices
                .iter_mut()
                .map(|s| &mut Arc::make_mut(s).metadata),
        );
        for (i, meta) in metas.enumerate() {
            meta.uid = Some(format!("uid-{i}"));
            meta.resource_version = Some("1".into());
        }
    }
    let node = NodeFacts {
        name: xtask::testbed::NODE_NAME.into(),
        addresses: vec![xtask::testbed::NODE_ADDR.into()],
        zone: None,
    };
    let rules = Rules::default();
    let mut maps = MemoryMaps::new(services as u32 + 16);
    let mut applied = Applied::read(&maps)?;
    let mut tracker = Tracker::new(rules.clone());
    let state = tracker
        .update_shared(&set.services, &set.slices, &node, &Holders::default)
        .clone();
    let mut planner = Planner::new();
    let first = planner.plan(&state, tracker.changes(), &applied, maps.max_tables());
    plan::apply(&first, &mut maps, &mut applied)?;
    let changed = set.slices.len() - 1;
    let mut took = Took::default();
    let mut holders = holders_of(&state);
    // The agent's path alone first, as the agent runs it: the whole
    // computation's allocations and frees between its samples would
    // be timed as the allocator's cleanup after them (glibc's
    // consolidation of freed chunks), which no agent sync pays.
    for sample in 0..samples {
        change(&mut set, changed, sample, api);
        let started = Instant::now();
        // Called only when a recomputed group reads them, as the agent's.
        tracker.update_shared(&set.services, &set.slices, &node, &|| holders.clone());
        took.incremental.push(ms(started));
        let (state, changes) = tracker.last();
        let started = Instant::now();
        let plan = planner.plan(state, changes, &applied, maps.max_tables());
        took.planner.push(ms(started));
        plan::apply(&plan, &mut maps, &mut applied)?;
    }
    // Both paths agree, for a change to each of the two addresses.
    holders = holders_of(tracker.last().0);
    for sample in samples..samples + 2 {
        change(&mut set, changed, sample, api);
        let full = desired::compute(&set.services, &set.slices, &node, &rules, &holders);
        tracker.update_shared(&set.services, &set.slices, &node, &|| holders.clone());
        let (state, changes) = tracker.last();
        if state.frontends != full.frontends {
            bail!("the tracker's desired state differs from the full computation's");
        }
        let whole = plan::plan(state, &applied, maps.max_tables());
        let plan = planner.plan(state, changes, &applied, maps.max_tables());
        let keys = |plan: &plan::Plan| {
            plan.set_frontends
                .iter()
                .map(|(key, _)| *key)
                .collect::<Vec<_>>()
        };
        if keys(&plan) != keys(&whole) {
            bail!("the planner writes other frontends than the whole plan");
        }
        plan::apply(&plan, &mut maps, &mut applied)?;
        holders = holders_of(&full);
    }
    // Then the path of every sync before the tracker and the planner.
    for sample in samples + 2..2 * samples + 2 {
        change(&mut set, changed, sample, api);
        let started = Instant::now();
        let full = desired::compute(&set.services, &set.slices, &node, &rules, &holders);
        took.full.push(ms(started));
        let started = Instant::now();
        let whole = plan::plan(&full, &applied, maps.max_tables());
        took.plan.push(ms(started));
        plan::apply(&whole, &mut maps, &mut applied)?;
        holders = holders_of(&full);
    }
    Ok(took)
}

/// Sample `sample`'s change: a filler's first endpoint moves between two
/// addresses, copied on write as a reflector replaces the object it
/// stores (with a new resourceVersion for API objects).
fn change(set: &mut lb::source::Snapshot, changed: usize, sample: usize, api: bool) {
    let slice = Arc::make_mut(&mut set.slices[changed]);
    if let Some(first) = slice.endpoints.first_mut() {
        first.address = Some(format!("198.18.{}.1", sample % 2).into());
    }
    if api {
        slice.metadata.resource_version = Some(format!("{}", sample + 2));
    }
}

fn holders_of(state: &DesiredState) -> Holders {
    state
        .frontends
        .iter()
        .map(|(frontend, spec)| (*frontend, spec.service.clone()))
        .collect()
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    /// The section's measurement runs and its two paths agree.
    #[test]
    fn measures_both_paths_at_a_small_size() {
        let took = super::measure(20, 2, false).expect("measured");
        assert_eq!(took.full.len(), 2);
        assert_eq!(took.incremental.len(), 2);
        assert_eq!(took.plan.len(), 2);
        assert_eq!(took.planner.len(), 2);
        let api = super::measure(20, 2, true).expect("measured");
        assert_eq!(api.incremental.len(), 2);
    }
}
