//! The agent's planning across syncs: the whole plan at start-up, after a
//! reset of the desired state (the periodic resync) and after an apply
//! that failed; otherwise only the Service ports the tracker recomputed,
//! plus those the previous plan could not plan (so a port waiting for a
//! table the quarantine holds is retried at every sync, as the whole plan
//! retries it).

use std::collections::BTreeSet;

use super::{
    Applied, Plan,
    diff::plan_whole,
    scoped::{Scope, plan_scope},
    usage::Usage,
};
use crate::{
    desired::incremental::Changes,
    model::{DesiredState, ServicePortName, SourceRange},
};

/// How the last plan was made (for the sync's log line and the bench).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanStats {
    /// The whole desired state was planned.
    pub whole: bool,
    /// Service ports planned.
    pub ports: usize,
}

pub struct Planner {
    usage: Usage,
    /// Ports the last plan could not plan.
    retry: BTreeSet<ServicePortName>,
    /// The next plan is whole (nothing planned yet, or the last plan was
    /// not applied as planned).
    whole_next: bool,
    stats: PlanStats,
    /// `--service-cidr`'s IPv4 prefixes, which every plan keeps in the
    /// service-CIDR trie.
    service_cidrs: BTreeSet<SourceRange>,
    /// The last plan's UDP purges, and those of a plan not applied, which
    /// the next plan makes again.
    purge_planned: Vec<(u32, lb_common::Backend4)>,
    purge_not_applied: Vec<(u32, lb_common::Backend4)>,
}

impl Default for Planner {
    fn default() -> Self {
        Planner::new()
    }
}

impl Planner {
    pub fn new() -> Planner {
        Planner {
            usage: Usage::default(),
            retry: BTreeSet::new(),
            whole_next: true,
            stats: PlanStats::default(),
            service_cidrs: BTreeSet::new(),
            purge_planned: Vec::new(),
            purge_not_applied: Vec::new(),
        }
    }

    /// A planner whose plans keep `cidrs` in the service-CIDR trie.
    pub fn with_service_cidrs(cidrs: BTreeSet<SourceRange>) -> Planner {
        Planner {
            service_cidrs: cidrs,
            ..Planner::new()
        }
    }

    /// The plan that takes `applied` to `desired`, where `changes` says
    /// what changed in `desired` since the previous call.
    pub fn plan(
        &mut self,
        desired: &DesiredState,
        changes: &Changes,
        applied: &Applied,
        max_tables: u32,
    ) -> Plan {
        let mut stale = Vec::new();
        let (plan, failed) = if changes.all || self.whole_next {
            self.whole_next = false;
            let old = std::mem::replace(&mut self.usage, Usage::build(desired));
            stale = if old.is_empty() {
                super::stale_udp::stale_at_start(&self.usage, applied)
            } else {
                self.usage.stale_since(&old)
            };
            let ports = desired.services.len();
            self.stats = PlanStats { whole: true, ports };
            plan_whole(desired, applied, max_tables)
        } else {
            let backends = self.usage.update(desired, changes, &mut stale);
            let scope = Scope {
                services: changes.services.iter().chain(&self.retry).collect(),
                frontends: &changes.frontends,
                backends,
            };
            let ports = scope.services.len();
            self.stats = PlanStats {
                whole: false,
                ports,
            };
            plan_scope(desired, &scope, &self.usage, applied, max_tables)
        };
        self.retry = failed.into_iter().collect();
        let mut plan = plan;
        super::service_cidrs::plan_service_cidrs(&self.service_cidrs, applied, &mut plan);
        let mut purge = std::mem::take(&mut self.purge_not_applied);
        purge.extend(super::stale_udp::purges(&stale, applied));
        purge.sort();
        purge.dedup();
        plan.purge_connections = purge.clone();
        self.purge_planned = purge;
        plan
    }

    /// The last plan was not applied whole (the maps were read again): the
    /// next one plans everything, and purges what this one was to (the
    /// listings it compared are gone).
    pub fn not_applied(&mut self) {
        self.whole_next = true;
        self.purge_not_applied = std::mem::take(&mut self.purge_planned);
    }

    pub fn stats(&self) -> PlanStats {
        self.stats
    }
}

#[cfg(test)]
mod tests;
