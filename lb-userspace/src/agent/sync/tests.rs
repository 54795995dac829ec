//! The sync against the in-memory datapath.

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

    syncer
        .sync(&source, &mut maps, &mut applied, SyncKind::Change)
        .await;
    assert_eq!(maps.frontends().unwrap().len(), 1);
    assert_eq!(maps.backends().unwrap().len(), 1);

    source.answer(None);
    syncer
        .sync(&source, &mut maps, &mut applied, SyncKind::Change)
        .await;
    assert_eq!(
        maps.frontends().unwrap().len(),
        1,
        "an unreadable source deleted the state"
    );
    assert_eq!(maps.backends().unwrap().len(), 1);

    source.answer(Some(Snapshot::default()));
    syncer
        .sync(&source, &mut maps, &mut applied, SyncKind::Change)
        .await;
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
        .sync(&source, &mut maps, &mut applied, SyncKind::Change)
        .await;
    let before = map_owners(&maps);
    assert!(before.contains(&"192.168.1.10:30080/TCP External default/good:http".to_owned()));

    // A new agent process: nothing remembered but the maps.
    let both = manifests::parse_documents("steal.yaml", STEAL)
        .merge(manifests::parse_documents("good.yaml", GOOD));
    source.answer(Some(both));
    let mut applied = Applied::read(&maps).unwrap();
    Syncer::new(node, Rules::default(), Outputs::default())
        .sync(&source, &mut maps, &mut applied, SyncKind::Change)
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
                sync_period: std::time::Duration::from_secs(30),
            }),
            metrics: Some(metrics.clone()),
            health: None,
            service_health: None,
        },
    );
    syncer
        .sync(&source, &mut maps, &mut applied, SyncKind::Change)
        .await;
    let published = status::read(dir.path()).expect("published");
    assert!(published.last_sync_ok);
    assert_eq!(published.source, "manifests:/m");
    assert_eq!(published.sync_period_seconds, 30);
    let succeeded_at = published.last_success_unix;
    assert!(succeeded_at > 0 && succeeded_at == published.last_sync_unix);
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
    syncer
        .sync(&source, &mut maps, &mut applied, SyncKind::Change)
        .await;
    let published = status::read(dir.path()).expect("published");
    assert!(!published.last_sync_ok);
    assert!(published.last_sync_error.is_some());
    assert_eq!(
        published.last_success_unix, succeeded_at,
        "a failed sync keeps the last success"
    );
    assert_eq!(published.problems.len(), 1);

    source.answer(Some(manifests::parse_documents("web.yaml", WEB)));
    syncer
        .sync(&source, &mut maps, &mut applied, SyncKind::Change)
        .await;
    assert!(syncer.reported.is_empty(), "the problem resolved");
    let published = status::read(dir.path()).expect("published");
    assert!(published.last_sync_ok && published.problems.is_empty());
    assert!(
        metrics
            .render()
            .contains("lb_skipped_objects{reason=\"invalid-yaml\"} 0")
    );
}

/// A sample's value in the rendered metrics, parsed by an independent
/// parser of the Prometheus text format.
pub(crate) fn sample(text: &str, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// The periodic resync re-reads the maps (kube-proxy's periodic full sync
/// rewrites every rule; ours rewrites only what differs): a frontend
/// deleted and a backend changed behind the agent's back are written
/// again, and counted in `lb_resync_repaired_entries_total`. A sync for a
/// change trusts what the agent wrote and does not look.
#[tokio::test]
async fn the_periodic_resync_repairs_and_counts_what_changed_behind_the_agents_back() {
    let source = Scripted(RefCell::new(Some(manifests::parse_documents(
        "web.yaml", WEB,
    ))));
    let mut maps = MemoryMaps::new(4);
    let mut applied = Applied::default();
    let metrics = Metrics::new();
    let outputs = Outputs {
        metrics: Some(metrics.clone()),
        ..Outputs::default()
    };
    let mut syncer = Syncer::new(node(), Rules::default(), outputs);
    assert!(
        syncer
            .sync(&source, &mut maps, &mut applied, SyncKind::Change)
            .await
    );
    let written = maps.clone();
    let repaired = |map| {
        sample(
            &metrics.render(),
            "lb_resync_repaired_entries_total",
            Some(("map", map)),
        )
    };
    assert!(
        syncer
            .sync(&source, &mut maps, &mut applied, SyncKind::Resync)
            .await
    );
    assert_eq!(repaired("frontends"), Some(0.0), "nothing drifted yet");
    assert_eq!(
        maps.log, written.log,
        "a resync with no drift writes nothing"
    );

    // Behind the agent's back: a frontend deleted, a backend moved.
    let (key, _) = maps.frontends.pop_first().expect("a frontend");
    let backend = maps.backends.values_mut().next().expect("a backend");
    backend.port_be = 9999u16.to_be();
    assert!(
        syncer
            .sync(&source, &mut maps, &mut applied, SyncKind::Change)
            .await
    );
    assert!(
        !maps.frontends.contains_key(&key),
        "a change sync does not re-read"
    );

    assert!(
        syncer
            .sync(&source, &mut maps, &mut applied, SyncKind::Resync)
            .await
    );
    assert_eq!(
        maps.frontends.len(),
        written.frontends.len(),
        "frontend restored"
    );
    assert!(maps.frontends.contains_key(&key));
    assert!(maps.dangling().is_empty(), "{:?}", maps.dangling());
    let ports: Vec<u16> = maps
        .backends
        .values()
        .map(|b| u16::from_be(b.port_be))
        .collect();
    assert!(ports.contains(&8080) && !ports.contains(&9999), "{ports:?}");
    assert_eq!(repaired("frontends"), Some(1.0));
    assert_eq!(repaired("backends"), Some(1.0));
    assert_eq!(repaired("services"), Some(0.0));

    assert!(
        syncer
            .sync(&source, &mut maps, &mut applied, SyncKind::Resync)
            .await
    );
    assert_eq!(repaired("frontends"), Some(1.0), "repaired once, not again");
}

/// kube-proxy's network programming latency (endpointschangetracker.go):
/// each new `last-change-trigger-time` of a slice is observed once, after
/// the sync that wrote it succeeded; a failed sync keeps it for the retry;
/// an unchanged value is not observed again.
#[tokio::test]
async fn network_programming_latency_is_observed_once_per_new_trigger_time() {
    let with_trigger = |seconds_ago: i64, endpoint: &str| {
        let when = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(seconds_ago);
        let annotated = WEB.replace("10.244.1.7", endpoint).replace(
            "  labels: {kubernetes.io/service-name: web}",
            &format!(
                "  labels: {{kubernetes.io/service-name: web}}\n  annotations: {{endpoints.kubernetes.io/last-change-trigger-time: \"{when}\"}}"
            ),
        );
        manifests::parse_documents("web.yaml", &annotated)
    };
    let source = Scripted(RefCell::new(Some(with_trigger(0, "10.244.1.7"))));
    let mut maps = MemoryMaps::new(4);
    let mut applied = Applied::default();
    let metrics = Metrics::new();
    let outputs = Outputs {
        metrics: Some(metrics.clone()),
        ..Outputs::default()
    };
    let mut syncer = Syncer::new(node(), Rules::default(), outputs);
    // Trigger times from before the agent started are not observed.
    syncer.trigger_times =
        TriggerTimes::started_at(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60));
    let observed = || {
        sample(
            &metrics.render(),
            "kubeproxy_network_programming_duration_seconds_count",
            None,
        )
    };
    assert!(
        syncer
            .sync(&source, &mut maps, &mut applied, SyncKind::Change)
            .await
    );
    assert_eq!(observed(), Some(1.0));
    assert!(
        syncer
            .sync(&source, &mut maps, &mut applied, SyncKind::Resync)
            .await
    );
    assert_eq!(
        observed(),
        Some(1.0),
        "the same value is not observed again"
    );

    // A new value, 2 s old, whose first sync fails: observed after the retry.
    source.answer(Some(with_trigger(2, "10.244.1.8")));
    maps.fail_after(0);
    assert!(
        !syncer
            .sync(&source, &mut maps, &mut applied, SyncKind::Change)
            .await
    );
    assert_eq!(observed(), Some(1.0), "not observed by a failed sync");
    assert!(
        syncer
            .sync(&source, &mut maps, &mut applied, SyncKind::Retry)
            .await
    );
    assert_eq!(observed(), Some(2.0));
    let sum = sample(
        &metrics.render(),
        "kubeproxy_network_programming_duration_seconds_sum",
        None,
    )
    .unwrap();
    assert!((2.0..10.0).contains(&sum), "{sum}");

    // From before the agent started: ignored.
    source.answer(Some(with_trigger(120, "10.244.1.9")));
    assert!(
        syncer
            .sync(&source, &mut maps, &mut applied, SyncKind::Change)
            .await
    );
    assert_eq!(observed(), Some(2.0));
}

/// `n` ClusterIP Services, each with its own endpoint (so its own table).
fn services(n: usize) -> Snapshot {
    let yaml: String = (0..n)
        .map(|i| {
            format!(
                "apiVersion: v1
kind: Service
metadata: {{name: s{i}, namespace: shop}}
spec:
  clusterIP: 10.96.{}.{}
  ports: [{{name: http, port: 80, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: s{i}-1
  namespace: shop
  labels: {{kubernetes.io/service-name: s{i}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
- addresses: [10.244.{}.{}]
  conditions: {{ready: true}}
- addresses: [10.245.{}.{}]
  conditions: {{ready: true}}
---
",
                i / 200,
                i % 200 + 1,
                i / 200,
                i % 200 + 1,
                i / 200,
                i % 200 + 1
            )
        })
        .collect();
    manifests::parse_documents("many.yaml", &yaml)
}

/// A Maglev table changed behind the agent's back, with every frontend,
/// backend and service as written, is found by the resync's spot check of
/// the tables, a different run of them each time (128 a resync), and
/// repaired: its Service port rewrites it whole, in place.
#[tokio::test]
async fn the_resync_spot_checks_the_tables_in_turn_and_repairs_a_changed_one() {
    let count = super::super::drift::TABLES_PER_RESYNC + 10;
    let source = Scripted(RefCell::new(Some(services(count))));
    let mut maps = MemoryMaps::new(2 * count as u32);
    let mut applied = Applied::default();
    let metrics = Metrics::new();
    let outputs = Outputs {
        metrics: Some(metrics.clone()),
        ..Outputs::default()
    };
    let mut syncer = Syncer::new(node(), Rules::default(), outputs);
    assert!(
        syncer
            .sync(&source, &mut maps, &mut applied, SyncKind::Change)
            .await
    );
    // The last table in id order: the first spot check does not reach it.
    let (&last, slots) = maps.tables.iter_mut().next_back().expect("tables");
    let original = slots.clone();
    let other = slots
        .iter()
        .position(|id| *id != slots[0])
        .expect("two backends");
    slots.swap(0, other);
    let tables = |maps: &MemoryMaps| maps.tables.len();
    let written = tables(&maps);
    let repaired = || {
        sample(
            &metrics.render(),
            "lb_resync_repaired_entries_total",
            Some(("map", "maglev_tables")),
        )
    };
    assert!(
        syncer
            .sync(&source, &mut maps, &mut applied, SyncKind::Resync)
            .await
    );
    assert_eq!(repaired(), Some(0.0), "not in the first run of tables");
    assert_eq!(tables(&maps), written);
    assert!(
        syncer
            .sync(&source, &mut maps, &mut applied, SyncKind::Resync)
            .await
    );
    assert_eq!(repaired(), Some(1.0), "found by the second run");
    // Its Service port's own table: rewritten in place.
    assert_eq!(maps.tables[&last], original, "the table is repaired");
    assert!(maps.dangling().is_empty(), "{:?}", maps.dangling());
}
