//! One reconciliation: source snapshot -> desired state -> plan -> apply.

use std::{collections::BTreeSet, time::Instant};

use tracing::{info, warn};

use crate::{
    datapath::DatapathMaps,
    desired,
    model::{DesiredState, NodeFacts},
    plan::{self, Applied},
    source::{Snapshot, Source},
};

/// The desired state of a snapshot: the objects the source could not read
/// are reported first, then those the desired state could not use.
pub(super) fn desired_state(snapshot: Snapshot, node: &NodeFacts) -> DesiredState {
    let mut state = desired::compute(&snapshot.services, &snapshot.slices, node);
    let mut problems = snapshot.problems;
    problems.append(&mut state.problems);
    state.problems = problems;
    state
}

/// Reconciles the maps to a source; remembers what was last reported, so a
/// periodic resync does not repeat the same warnings.
pub(super) struct Syncer {
    node: NodeFacts,
    reported: BTreeSet<String>,
}

impl Syncer {
    pub fn new(node: NodeFacts) -> Syncer {
        Syncer {
            node,
            reported: BTreeSet::new(),
        }
    }

    /// Makes the maps what the source says. Whatever fails keeps the current
    /// state, to be retried at the next change or resync.
    pub fn sync(
        &mut self,
        source: &impl Source,
        maps: &mut dyn DatapathMaps,
        applied: &mut Applied,
    ) {
        let started = Instant::now();
        let snapshot = match source.snapshot() {
            Ok(snapshot) => snapshot,
            Err(err) => {
                warn!("keeping the current state: {err}");
                return;
            }
        };
        let desired = desired_state(snapshot, &self.node);
        self.report(&desired);
        let plan = match plan::plan(&desired, applied, maps.max_tables()) {
            Ok(plan) => plan,
            Err(err) => {
                warn!("keeping the current state: {err}");
                return;
            }
        };
        if plan.is_empty() {
            return;
        }
        match plan::apply(&plan, maps, applied) {
            Ok(()) => info!(
                frontends = desired.frontends.len(),
                changes = plan.set_frontends.len() + plan.remove_frontends.len(),
                tables = plan.write_tables.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "synced"
            ),
            Err(err) => {
                warn!("applying the plan failed, will retry: {err}");
                match Applied::read(maps) {
                    Ok(fresh) => *applied = fresh,
                    Err(err) => warn!("re-reading the maps failed: {err}"),
                }
            }
        }
    }

    fn report(&mut self, desired: &DesiredState) {
        let now: BTreeSet<String> = desired.problems.iter().map(ToString::to_string).collect();
        for problem in now.difference(&self.reported) {
            warn!("skipped: {problem}");
        }
        self.reported = now;
    }
}
