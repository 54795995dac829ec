//! One reconciliation: source snapshot -> desired state -> plan -> apply.

use std::{collections::BTreeSet, path::PathBuf, sync::Arc, time::Instant};

use tracing::{debug, info, warn};

use super::{
    drift::{Drift, SpotCheck},
    health::Health,
    metrics::{Metrics, TriggerTimes},
    runner::SyncKind,
    service_health::ServiceHealth,
    status::{self, AgentStatus, StatusProblem},
};
use crate::{
    datapath::{DatapathMaps, codec},
    desired::{self, Holders, Rules, incremental::Tracker},
    model::{NodeFacts, Problem},
    plan::{self, Applied, Plan, Planner},
    source::{Snapshot, Source, SourceError},
};

fn micros(took: std::time::Duration) -> u64 {
    u64::try_from(took.as_micros()).unwrap_or(u64::MAX)
}

/// Who each programmed frontend leads to, as the pinned maps say; entries
/// this agent cannot read (another version's) hold nothing.
pub(super) fn holders(applied: &Applied) -> Holders {
    applied
        .frontends
        .iter()
        .filter_map(|(key, value)| {
            let frontend = codec::frontend_from_key(key)?;
            let info = applied.service_infos.get(&value.service_id)?;
            let (service, _) = codec::service_from_info(info)?;
            Some((frontend, service))
        })
        .collect()
}

/// Where a sync's outcome goes besides the log: the status file, the
/// metrics, the health endpoint and the health-check ports. Tests run
/// without any.
#[derive(Default)]
pub(super) struct Outputs {
    pub status: Option<StatusOutput>,
    pub metrics: Option<Arc<Metrics>>,
    pub health: Option<Arc<Health>>,
    pub service_health: Option<ServiceHealth>,
}

pub(super) struct StatusOutput {
    pub state_dir: PathBuf,
    pub source: String,
    /// `--sync-period`, so `lb status` can tell a late agent.
    pub sync_period: std::time::Duration,
}

/// Reconciles the maps to a source; remembers what was last reported, so a
/// periodic resync does not repeat the same warnings.
pub(super) struct Syncer {
    node: NodeFacts,
    reported: BTreeSet<String>,
    outputs: Outputs,
    status: AgentStatus,
    status_failed: bool,
    /// The last sync found the source still waiting for its initial lists
    /// (or its Node): not an attempt the minimum interval counts from.
    pub waiting: bool,
    /// What it waited for was this node's Node object.
    pub node_missing: bool,
    trigger_times: TriggerTimes,
    spot_check: SpotCheck,
    /// The desired state, recomputed per changed Service.
    tracker: Tracker,
    /// The cluster's settings (the health-check ports read them too).
    rules: Rules,
    /// The plans, made per changed Service port.
    planner: Planner,
    /// The masquerade address, from the node's facts.
    snat_address: super::snat_address::SnatAddress,
    /// `--pod-device auto`: the pod hook's devices, from the endpoints.
    pod_devices: Option<super::pod_devices::PodDevices>,
}

impl Syncer {
    pub fn new(node: NodeFacts, rules: Rules, outputs: Outputs) -> Syncer {
        let output = outputs.status.as_ref();
        let status = AgentStatus {
            pid: std::process::id(),
            source: output.map(|s| s.source.clone()).unwrap_or_default(),
            sync_period_seconds: output.map_or(0, |s| s.sync_period.as_secs()),
            ..AgentStatus::default()
        };
        Syncer {
            node,
            reported: BTreeSet::new(),
            outputs,
            status,
            status_failed: false,
            trigger_times: TriggerTimes::default(),
            spot_check: SpotCheck::default(),
            waiting: false,
            node_missing: false,
            tracker: Tracker::new(rules.clone()),
            planner: Planner::with_service_cidrs(rules.ipv4_service_cidrs()),
            rules,
            snat_address: Default::default(),
            pod_devices: None,
        }
    }

    /// Hooks the devices of local endpoints at each sync, before the plan
    /// writes them (`--pod-device auto`).
    pub fn follow_pod_devices(&mut self, devices: super::pod_devices::PodDevices) {
        self.pod_devices = Some(devices);
    }

    /// Makes the maps what the source says; true when they are. Whatever
    /// fails keeps the current state, to be retried. A resync first reads
    /// the maps again, so the plan also repairs what changed behind the
    /// agent's back.
    pub async fn sync(
        &mut self,
        source: &impl Source,
        maps: &mut dyn DatapathMaps,
        applied: &mut Applied,
        kind: SyncKind,
    ) -> bool {
        let started = Instant::now();
        let ok = self.reconcile(source, maps, applied, kind).await;
        // Waiting for the source is no sync (kube-proxy's histogram has no
        // sample before its informers have listed).
        if let Some(metrics) = &self.outputs.metrics
            && !self.waiting
        {
            metrics.synced(started.elapsed().as_secs_f64(), ok);
        }
        if ok && let Some(health) = &self.outputs.health {
            health.updated();
        }
        ok
    }

    async fn reconcile(
        &mut self,
        source: &impl Source,
        maps: &mut dyn DatapathMaps,
        applied: &mut Applied,
        kind: SyncKind,
    ) -> bool {
        let started = Instant::now();
        self.waiting = false;
        self.node_missing = false;
        let mut snapshot = match source.snapshot().await {
            Ok(snapshot) => snapshot,
            Err(err) => {
                self.waiting = err.is_waiting();
                self.node_missing = matches!(err, SourceError::NodeMissing { .. });
                if self.waiting {
                    // Not a failure: kube-proxy, too, syncs only once its
                    // informers have listed (and its Node exists).
                    info!("waiting for the source: {err}");
                } else {
                    warn!("keeping the current state: {err}");
                    self.failed("source");
                }
                self.publish(Err(err.to_string()));
                return false;
            }
        };
        let snapshot_taken = started.elapsed();
        let drift = if kind == SyncKind::Resync {
            // kube-proxy's periodic full sync: everything is recomputed
            // once (which also sorts entangled Services out again).
            self.tracker.reset();
            self.snat_address.forget();
            self.reread(maps, applied)
        } else {
            Drift::default()
        };
        let files = Snapshot {
            files: std::mem::take(&mut snapshot.files),
            ..Snapshot::default()
        };
        let triggers = self.trigger_times.pending(&snapshot.slices);
        if let (Some(eligible), Some(health)) = (snapshot.node_eligible, &self.outputs.health) {
            health.set_node_eligible(eligible);
        }
        // Cluster mode's Node object replaces the configured facts.
        let node = snapshot.node.take().unwrap_or_else(|| self.node.clone());
        if let Err(err) = self.snat_address.sync(&node, maps) {
            warn!("writing the masquerade address failed, will retry: {err}");
        }
        // The resync's read-back, the trigger times, the masquerade address.
        let prelude = started.elapsed() - snapshot_taken;
        let computing = Instant::now();
        self.tracker
            .update_shared(&snapshot.services, &snapshot.slices, &node, &|| {
                holders(applied)
            });
        let (desired, changes) = self.tracker.last();
        let computed = computing.elapsed();
        if let Some(devices) = &mut self.pod_devices
            && let Err(err) = devices.sync(&super::pod_devices::local_endpoints(desired))
        {
            warn!("following the pods' devices failed, will retry: {err:#}");
        }
        let plan = self
            .planner
            .plan(desired, changes, applied, maps.max_tables());
        let planned = computing.elapsed() - computed;
        let frontends = desired.frontends.len();
        let outputs_started = Instant::now();
        // The source's problems first, then the desired state's.
        let mut problems = snapshot.problems;
        problems.extend(desired.problems.iter().cloned());
        if let Some(servers) = &mut self.outputs.service_health {
            let checks =
                desired::health_checks(&snapshot.services, &snapshot.slices, &node, &self.rules);
            problems.extend(servers.sync(&checks, &node.addresses));
        }
        let stats = self.tracker.stats();
        let plan_stats = self.planner.stats();
        debug!(
            recomputed = stats.recomputed,
            entangled = stats.entangled,
            full = stats.full,
            planned_ports = plan_stats.ports,
            whole_plan = plan_stats.whole,
            "desired state and plan"
        );
        self.record_problems(&problems, &plan, &files);
        let outputs = outputs_started.elapsed();
        // Applied even with nothing to write: that ends the quarantine of
        // the tables the previous plan freed, which a skipped Service may
        // be waiting for.
        let outcome = match self.apply(&plan, maps, applied, triggers) {
            Ok((applied_in, cleaned_in)) => {
                self.repaired(&drift);
                if !plan.is_empty() {
                    // Each phase in microseconds: what the bench reads
                    // off the log to say where a sync's time went.
                    info!(
                        frontends,
                        recomputed = stats.recomputed,
                        changes = plan.set_frontends.len() + plan.remove_frontends.len(),
                        tables = plan.write_tables.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        snapshot_us = micros(snapshot_taken),
                        prelude_us = micros(prelude),
                        desired_us = micros(computed),
                        plan_us = micros(planned),
                        outputs_us = micros(outputs),
                        apply_us = micros(applied_in),
                        cleanup_us = micros(cleaned_in),
                        "synced"
                    );
                }
                Ok(())
            }
            Err(err) => {
                warn!("applying the plan failed, will retry: {err}");
                self.failed("apply");
                self.planner.not_applied();
                match Applied::reread(maps, applied) {
                    Ok(fresh) => *applied = fresh,
                    Err(err) => warn!("re-reading the maps failed: {err}"),
                }
                Err(format!("applying the plan failed: {err}"))
            }
        };
        let ok = outcome.is_ok();
        self.publish(outcome);
        ok
    }

    /// Applies `plan`: its selection, then the trigger times it made
    /// effective are observed (kube-proxy's programming latency ends
    /// there, before its conntrack cleanup), then its cleanup (purges,
    /// removals, the wait for readers of tables rewritten in place). The
    /// time each half took.
    fn apply(
        &mut self,
        plan: &Plan,
        maps: &mut dyn DatapathMaps,
        applied: &mut Applied,
        triggers: super::metrics::Pending,
    ) -> Result<(std::time::Duration, std::time::Duration), crate::datapath::MapsError> {
        let applying = Instant::now();
        plan::apply_selection(plan, maps)?;
        let applied_in = applying.elapsed();
        self.programmed(triggers);
        let cleaning = Instant::now();
        plan::apply_cleanup(plan, maps, applied)?;
        Ok((applied_in, cleaning.elapsed()))
    }

    /// The problems of the source, the desired state and the plan: in the
    /// log (once), the status and the metrics.
    fn record_problems(&mut self, desired: &[Problem], plan: &Plan, files: &Snapshot) {
        let problems: Vec<Problem> = desired.iter().chain(&plan.problems).cloned().collect();
        self.report(&problems);
        self.status.problems = problems
            .iter()
            .map(|p| StatusProblem::of(p, files))
            .collect();
        if let Some(metrics) = &self.outputs.metrics {
            metrics.count_problems(&problems);
        }
    }

    /// Reads the maps again for a resync: what differs from what the agent
    /// wrote is drift, which the plan made from the fresh read repairs.
    /// Everything is read back only when the spot check finds a difference.
    fn reread(&mut self, maps: &dyn DatapathMaps, applied: &mut Applied) -> Drift {
        let started = Instant::now();
        match self.spot_check.unchanged(maps, applied) {
            Ok(true) => {
                debug!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "resync: the maps are as written"
                );
                return Drift::default();
            }
            Ok(false) => {}
            Err(err) => warn!("spot-checking the maps failed, reading them all back: {err}"),
        }
        match Applied::reread(maps, applied) {
            Ok(fresh) => {
                let drift = Drift::between(applied, &fresh);
                debug!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "resync: the maps read back"
                );
                if !drift.is_empty() {
                    warn!(
                        ?drift,
                        "the maps changed behind the agent's back; repairing"
                    );
                }
                *applied = fresh;
                drift
            }
            Err(err) => {
                warn!("re-reading the maps for the resync failed, planning from memory: {err}");
                Drift::default()
            }
        }
    }

    fn failed(&self, stage: &'static str) {
        if let Some(metrics) = &self.outputs.metrics {
            metrics.sync_failed(stage);
        }
    }

    /// The new EndpointSlice trigger times this sync wrote to the maps.
    fn programmed(&mut self, triggers: super::metrics::Pending) {
        let latencies = self.trigger_times.applied(triggers, jiff::Timestamp::now());
        if let Some(metrics) = &self.outputs.metrics {
            for seconds in latencies {
                metrics.programmed(seconds);
            }
        }
    }

    fn repaired(&self, drift: &Drift) {
        if let Some(metrics) = &self.outputs.metrics {
            for (map, count) in drift.by_map() {
                if count > 0 {
                    metrics.repaired(map, count);
                }
            }
        }
    }

    /// Each problem is logged once when it appears and once when it clears.
    fn report(&mut self, problems: &[Problem]) {
        let now: BTreeSet<String> = problems.iter().map(ToString::to_string).collect();
        for problem in now.difference(&self.reported) {
            warn!("skipped: {problem}");
        }
        for problem in self.reported.difference(&now) {
            info!("resolved: {problem}");
        }
        self.reported = now;
    }

    /// Writes the status file; a failure is logged once, not at each sync.
    fn publish(&mut self, outcome: Result<(), String>) {
        self.status.last_sync_unix = status::unix_now();
        self.status.last_sync_ok = outcome.is_ok();
        if outcome.is_ok() {
            self.status.last_success_unix = self.status.last_sync_unix;
        }
        self.status.last_sync_error = outcome.err();
        let Some(output) = &self.outputs.status else {
            return;
        };
        match status::publish(&output.state_dir, &self.status) {
            Ok(()) => self.status_failed = false,
            Err(err) if !self.status_failed => {
                self.status_failed = true;
                warn!(
                    "cannot write the status for `lb status` in {}: {err}; check --state-dir",
                    output.state_dir.display()
                );
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests;
