//! One reconciliation: source snapshot -> desired state -> plan -> apply.

use std::{collections::BTreeSet, path::PathBuf, sync::Arc, time::Instant};

use tracing::{info, warn};

use super::{
    metrics::Metrics,
    status::{self, AgentStatus, StatusProblem},
};
use crate::{
    datapath::{DatapathMaps, codec},
    desired::{self, Holders, Rules},
    model::{DesiredState, NodeFacts, Problem},
    plan::{self, Applied},
    source::{Snapshot, Source},
};

/// The desired state of a snapshot: the objects the source could not read
/// are reported first, then those the desired state could not use. The
/// frontends `applied` holds keep their owners against newcomers.
pub(super) fn desired_state(
    snapshot: Snapshot,
    node: &NodeFacts,
    rules: &Rules,
    applied: &Applied,
) -> DesiredState {
    let holders = holders(applied);
    let mut state = desired::compute(&snapshot.services, &snapshot.slices, node, rules, &holders);
    let mut problems = snapshot.problems;
    problems.append(&mut state.problems);
    state.problems = problems;
    state
}

/// Who each programmed frontend leads to, as the pinned maps say; entries
/// this agent cannot read (another version's) hold nothing.
fn holders(applied: &Applied) -> Holders {
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

/// Where a sync's outcome goes besides the log: the status file and the
/// metrics. Tests run without either.
#[derive(Default)]
pub(super) struct Outputs {
    pub status: Option<StatusOutput>,
    pub metrics: Option<Arc<Metrics>>,
}

pub(super) struct StatusOutput {
    pub state_dir: PathBuf,
    pub source: String,
}

/// Reconciles the maps to a source; remembers what was last reported, so a
/// periodic resync does not repeat the same warnings.
pub(super) struct Syncer {
    node: NodeFacts,
    rules: Rules,
    reported: BTreeSet<String>,
    outputs: Outputs,
    status: AgentStatus,
    status_failed: bool,
}

impl Syncer {
    pub fn new(node: NodeFacts, rules: Rules, outputs: Outputs) -> Syncer {
        let status = AgentStatus {
            pid: std::process::id(),
            source: outputs
                .status
                .as_ref()
                .map(|s| s.source.clone())
                .unwrap_or_default(),
            ..AgentStatus::default()
        };
        Syncer {
            node,
            rules,
            reported: BTreeSet::new(),
            outputs,
            status,
            status_failed: false,
        }
    }

    /// Makes the maps what the source says. Whatever fails keeps the current
    /// state, to be retried at the next change or resync.
    pub async fn sync(
        &mut self,
        source: &impl Source,
        maps: &mut dyn DatapathMaps,
        applied: &mut Applied,
    ) {
        let started = Instant::now();
        let mut snapshot = match source.snapshot().await {
            Ok(snapshot) => snapshot,
            Err(err) => {
                warn!("keeping the current state: {err}");
                self.publish(Err(err.to_string()));
                return;
            }
        };
        let files = Snapshot {
            files: std::mem::take(&mut snapshot.files),
            ..Snapshot::default()
        };
        // Cluster mode's Node object replaces the configured facts.
        let node = snapshot.node.take();
        let node = node.as_ref().unwrap_or(&self.node);
        let desired = desired_state(snapshot, node, &self.rules, applied);
        let plan = plan::plan(&desired, applied, maps.max_tables());
        let problems: Vec<Problem> = desired
            .problems
            .iter()
            .chain(&plan.problems)
            .cloned()
            .collect();
        self.report(&problems);
        self.status.problems = problems
            .iter()
            .map(|p| StatusProblem::of(p, &files))
            .collect();
        if let Some(metrics) = &self.outputs.metrics {
            metrics.count_problems(&problems);
        }
        // Applied even with nothing to write: that ends the quarantine of
        // the tables the previous plan freed, which a skipped Service may
        // be waiting for.
        let outcome = match plan::apply(&plan, maps, applied) {
            Ok(()) if plan.is_empty() => Ok(()),
            Ok(()) => {
                info!(
                    frontends = desired.frontends.len(),
                    changes = plan.set_frontends.len() + plan.remove_frontends.len(),
                    tables = plan.write_tables.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "synced"
                );
                Ok(())
            }
            Err(err) => {
                warn!("applying the plan failed, will retry: {err}");
                match Applied::reread(maps, applied) {
                    Ok(fresh) => *applied = fresh,
                    Err(err) => warn!("re-reading the maps failed: {err}"),
                }
                Err(format!("applying the plan failed: {err}"))
            }
        };
        self.publish(outcome);
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
mod tests {
    use std::{cell::RefCell, path::Path};

    use super::*;
    use crate::{
        datapath::MemoryMaps,
        source::{SourceError, manifests},
    };

    /// A source that answers whatever the test last told it to.
    struct Scripted(RefCell<Option<Snapshot>>);

    impl Scripted {
        fn answer(&self, snapshot: Option<Snapshot>) {
            *self.0.borrow_mut() = snapshot;
        }
    }

    impl Source for Scripted {
        fn snapshot(&self) -> impl Future<Output = Result<Snapshot, SourceError>> + Send {
            std::future::ready(
                self.0
                    .borrow()
                    .clone()
                    .ok_or_else(|| SourceError::Unreadable {
                        path: Path::new("/manifests").to_owned(),
                        source: std::io::ErrorKind::NotFound.into(),
                    }),
            )
        }
        fn changed(&mut self) -> impl Future<Output = ()> + Send {
            std::future::pending()
        }
    }

    const WEB: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.244.1.7]
  conditions: {ready: true}
";

    fn node() -> NodeFacts {
        NodeFacts {
            name: "node-a".into(),
            ..NodeFacts::default()
        }
    }

    #[tokio::test]
    async fn a_source_that_cannot_tell_keeps_the_current_state_and_an_empty_one_empties_it() {
        let source = Scripted(RefCell::new(Some(manifests::parse_documents(
            "web.yaml", WEB,
        ))));
        let mut maps = MemoryMaps::new(4);
        let mut applied = Applied::default();
        let mut syncer = Syncer::new(node(), Rules::default(), Outputs::default());

        syncer.sync(&source, &mut maps, &mut applied).await;
        assert_eq!(maps.frontends().unwrap().len(), 1);
        assert_eq!(maps.backends().unwrap().len(), 1);

        source.answer(None);
        syncer.sync(&source, &mut maps, &mut applied).await;
        assert_eq!(
            maps.frontends().unwrap().len(),
            1,
            "an unreadable source deleted the state"
        );
        assert_eq!(maps.backends().unwrap().len(), 1);

        source.answer(Some(Snapshot::default()));
        syncer.sync(&source, &mut maps, &mut applied).await;
        assert!(maps.frontends().unwrap().is_empty());
        assert!(maps.backends().unwrap().is_empty());
    }

    /// Who serves each frontend, as the maps say: `addr:port/PROTO owner`.
    fn map_owners(maps: &MemoryMaps) -> Vec<String> {
        let applied = Applied::read(maps).unwrap();
        let mut out: Vec<String> = holders(&applied)
            .iter()
            .map(|(f, s)| format!("{f} {:?} {s}", f.scope))
            .collect();
        out.sort();
        out
    }

    /// A restarted agent learns who serves from the pinned maps: a newcomer
    /// whose name sorts first still does not take the NodePort.
    #[tokio::test]
    async fn a_restarted_agent_keeps_the_frontend_owners_of_the_pinned_maps() {
        const GOOD: &str = "apiVersion: v1
kind: Service
metadata: {name: good}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, nodePort: 30080}]
";
        const STEAL: &str = "apiVersion: v1
kind: Service
metadata: {name: aaa-steal}
spec:
  type: NodePort
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 80, nodePort: 30080}]
";
        let node = NodeFacts {
            name: "node-a".into(),
            addresses: vec!["192.168.1.10".parse().unwrap()],
            ..NodeFacts::default()
        };
        let mut maps = MemoryMaps::new(4);
        let source = Scripted(RefCell::new(Some(manifests::parse_documents(
            "good.yaml",
            GOOD,
        ))));
        let mut applied = Applied::default();
        Syncer::new(node.clone(), Rules::default(), Outputs::default())
            .sync(&source, &mut maps, &mut applied)
            .await;
        let before = map_owners(&maps);
        assert!(before.contains(&"192.168.1.10:30080/TCP External default/good:http".to_owned()));

        // A new agent process: nothing remembered but the maps.
        let both = manifests::parse_documents("steal.yaml", STEAL)
            .merge(manifests::parse_documents("good.yaml", GOOD));
        source.answer(Some(both));
        let mut applied = Applied::read(&maps).unwrap();
        Syncer::new(node, Rules::default(), Outputs::default())
            .sync(&source, &mut maps, &mut applied)
            .await;
        let after = map_owners(&maps);
        assert!(
            after.contains(&"192.168.1.10:30080/TCP External default/good:http".to_owned()),
            "{after:?}"
        );
        assert!(after.contains(&"10.96.0.11:80/TCP Internal default/aaa-steal:http".to_owned()));
        assert_eq!(
            after.len(),
            before.len() + 1,
            "the newcomer got only its ClusterIP"
        );
    }

    /// The status names each problem's file and code, and follows the
    /// source: a problem that clears leaves the status, a source that
    /// cannot tell marks the sync failed but keeps the problems it knew.
    #[tokio::test]
    async fn the_status_lists_problems_with_their_file_and_follows_the_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broken = manifests::parse_documents("web.yaml", WEB)
            .merge(manifests::parse_documents("bad.yaml", "a: [\n"));
        let source = Scripted(RefCell::new(Some(broken)));
        let mut maps = MemoryMaps::new(4);
        let mut applied = Applied::default();
        let metrics = Metrics::new();
        let mut syncer = Syncer::new(
            node(),
            Rules::default(),
            Outputs {
                status: Some(StatusOutput {
                    state_dir: dir.path().to_owned(),
                    source: "manifests:/m".into(),
                }),
                metrics: Some(metrics.clone()),
            },
        );
        syncer.sync(&source, &mut maps, &mut applied).await;
        let published = status::read(dir.path()).expect("published");
        assert!(published.last_sync_ok);
        assert_eq!(published.source, "manifests:/m");
        assert_eq!(published.problems.len(), 1, "{published:?}");
        let problem = &published.problems[0];
        assert_eq!(problem.file.as_deref(), Some("bad.yaml"));
        assert_eq!(problem.code, "invalid-yaml");
        assert!(
            metrics
                .render()
                .contains("lb_skipped_objects{reason=\"invalid-yaml\"} 1")
        );

        source.answer(None);
        syncer.sync(&source, &mut maps, &mut applied).await;
        let published = status::read(dir.path()).expect("published");
        assert!(!published.last_sync_ok);
        assert!(published.last_sync_error.is_some());
        assert_eq!(published.problems.len(), 1);

        source.answer(Some(manifests::parse_documents("web.yaml", WEB)));
        syncer.sync(&source, &mut maps, &mut applied).await;
        assert!(syncer.reported.is_empty(), "the problem resolved");
        let published = status::read(dir.path()).expect("published");
        assert!(published.last_sync_ok && published.problems.is_empty());
        assert!(
            metrics
                .render()
                .contains("lb_skipped_objects{reason=\"invalid-yaml\"} 0")
        );
    }
}
