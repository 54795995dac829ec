//! The sync loop: the runner's rules with a real Syncer, source and
//! in-memory datapath (tokio's paused clock where only timing matters),
//! and health over real HTTP when syncs stall.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use lb_common::{Backend4, Frontend4Key, FrontendValue, ServiceInfo};
use tokio::sync::mpsc;

use super::*;
use crate::{
    datapath::{MapsError, MemoryMaps, PurgeScope},
    desired::Rules,
    model::NodeFacts,
    source::{Snapshot, SourceError, manifests},
};

/// A source whose snapshot the test sets and whose changes it sends.
struct Fed {
    snapshot: Arc<Mutex<Snapshot>>,
    changes: mpsc::UnboundedReceiver<()>,
}

impl Source for Fed {
    fn snapshot(&self) -> impl Future<Output = Result<Snapshot, SourceError>> + Send {
        std::future::ready(Ok(self.snapshot.lock().unwrap().clone()))
    }
    async fn changed(&mut self) {
        if self.changes.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

fn web(endpoint: &str) -> Snapshot {
    let yaml = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  clusterIP: 10.96.0.10
  ports: [{{name: http, port: 80, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
- addresses: [{endpoint}]
  conditions: {{ready: true}}
"
    );
    manifests::parse_documents("web.yaml", &yaml)
}

/// MemoryMaps whose writes all fail while `broken` is set.
struct Breakable {
    maps: MemoryMaps,
    broken: Arc<AtomicBool>,
}

impl Breakable {
    fn check(&self) -> Result<(), MapsError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(MapsError::Invalid("the test broke the maps".into()));
        }
        Ok(())
    }
}

impl DatapathMaps for Breakable {
    fn max_tables(&self) -> u32 {
        self.maps.max_tables()
    }
    fn max_backends(&self) -> u32 {
        self.maps.max_backends()
    }
    fn frontends(&self) -> Result<Vec<(Frontend4Key, FrontendValue)>, MapsError> {
        self.maps.frontends()
    }
    fn backends(&self) -> Result<Vec<(u32, Backend4)>, MapsError> {
        self.maps.backends()
    }
    fn set_backend(&mut self, id: u32, backend: &Backend4) -> Result<(), MapsError> {
        self.check()?;
        self.maps.set_backend(id, backend)
    }
    fn remove_backend(&mut self, id: u32) -> Result<(), MapsError> {
        self.check()?;
        self.maps.remove_backend(id)
    }
    fn write_table(&mut self, table_id: u32, slots: &[u32]) -> Result<(), MapsError> {
        self.check()?;
        self.maps.write_table(table_id, slots)
    }
    fn release_table(&mut self, table_id: u32) -> Result<(), MapsError> {
        self.check()?;
        self.maps.release_table(table_id)
    }
    fn read_table(&self, table_id: u32) -> Result<Vec<u32>, MapsError> {
        self.maps.read_table(table_id)
    }
    fn set_frontend(&mut self, key: &Frontend4Key, value: &FrontendValue) -> Result<(), MapsError> {
        self.check()?;
        self.maps.set_frontend(key, value)
    }
    fn services(&self) -> Result<Vec<(u32, ServiceInfo)>, MapsError> {
        self.maps.services()
    }
    fn set_service(&mut self, id: u32, info: &ServiceInfo) -> Result<(), MapsError> {
        self.check()?;
        self.maps.set_service(id, info)
    }
    fn remove_service(&mut self, id: u32) -> Result<(), MapsError> {
        self.check()?;
        self.maps.remove_service(id)
    }
    fn remove_frontend(&mut self, key: &Frontend4Key) -> Result<(), MapsError> {
        self.check()?;
        self.maps.remove_frontend(key)
    }
    fn purge_connections_to(&mut self, backends: &[Backend4]) -> Result<usize, MapsError> {
        self.check()?;
        self.maps.purge_connections_to(backends)
    }
    fn purge_service_connections(
        &mut self,
        flows: &[(u32, Backend4)],
        scope: PurgeScope,
    ) -> Result<usize, MapsError> {
        self.check()?;
        self.maps.purge_service_connections(flows, scope)
    }
    fn purge_affinity(&mut self, pairs: &[(u32, u32)]) -> Result<usize, MapsError> {
        self.check()?;
        self.maps.purge_affinity(pairs)
    }
    fn set_snat_address(&mut self, addr: Option<std::net::Ipv4Addr>) -> Result<(), MapsError> {
        self.check()?;
        self.maps.set_snat_address(addr)
    }
    fn source_ranges(&self) -> Result<Vec<(u32, crate::model::SourceRange)>, MapsError> {
        self.maps.source_ranges()
    }
    fn set_source_range(
        &mut self,
        service_id: u32,
        range: &crate::model::SourceRange,
    ) -> Result<(), MapsError> {
        self.check()?;
        self.maps.set_source_range(service_id, range)
    }
    fn remove_source_range(
        &mut self,
        service_id: u32,
        range: &crate::model::SourceRange,
    ) -> Result<(), MapsError> {
        self.check()?;
        self.maps.remove_source_range(service_id, range)
    }
    fn cluster_ips(&self) -> Result<Vec<std::net::Ipv4Addr>, MapsError> {
        self.maps.cluster_ips()
    }
    fn set_cluster_ip(&mut self, addr: std::net::Ipv4Addr) -> Result<(), MapsError> {
        self.check()?;
        self.maps.set_cluster_ip(addr)
    }
    fn remove_cluster_ip(&mut self, addr: std::net::Ipv4Addr) -> Result<(), MapsError> {
        self.check()?;
        self.maps.remove_cluster_ip(addr)
    }
    fn service_cidrs(&self) -> Result<Vec<crate::model::SourceRange>, MapsError> {
        self.maps.service_cidrs()
    }
    fn set_service_cidr(&mut self, cidr: &crate::model::SourceRange) -> Result<(), MapsError> {
        self.check()?;
        self.maps.set_service_cidr(cidr)
    }
    fn remove_service_cidr(&mut self, cidr: &crate::model::SourceRange) -> Result<(), MapsError> {
        self.check()?;
        self.maps.remove_service_cidr(cidr)
    }
}

/// One agent loop over a fed source and breakable maps.
struct Harness {
    snapshot: Arc<Mutex<Snapshot>>,
    changes: mpsc::UnboundedSender<()>,
    broken: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

impl Harness {
    fn new(health_timeout: Duration) -> (Harness, Fed, Breakable) {
        let snapshot = Arc::new(Mutex::new(web("10.244.1.7")));
        let (changes, receiver) = mpsc::unbounded_channel();
        let broken = Arc::new(AtomicBool::new(false));
        let harness = Harness {
            snapshot: snapshot.clone(),
            changes,
            broken: broken.clone(),
            metrics: Metrics::new(),
            health: Health::new(health_timeout),
        };
        let source = Fed {
            snapshot,
            changes: receiver,
        };
        let maps = Breakable {
            maps: MemoryMaps::new(8),
            broken,
        };
        (harness, source, maps)
    }

    /// Runs the loop until `stop` resolves; the maps it left.
    async fn run(
        &self,
        source: impl Source,
        maps: Breakable,
        min: Duration,
        period: Duration,
        stop: impl Future,
    ) -> MemoryMaps {
        let (ended, maps) = self.run_until(source, maps, min, period, stop).await;
        ended.expect("the loop ends when stopped");
        maps
    }

    /// [`Harness::run`], with how the loop ended.
    async fn run_until(
        &self,
        mut source: impl Source,
        mut maps: Breakable,
        min: Duration,
        period: Duration,
        stop: impl Future,
    ) -> (anyhow::Result<()>, MemoryMaps) {
        let outputs = Outputs {
            metrics: Some(self.metrics.clone()),
            health: Some(self.health.clone()),
            ..Outputs::default()
        };
        let node = NodeFacts {
            name: "node-a".into(),
            ..NodeFacts::default()
        };
        let mut syncer = Syncer::new(node, Rules::default(), outputs);
        let mut applied = Applied::default();
        let mut sync_loop = SyncLoop {
            syncer: &mut syncer,
            maps: &mut maps,
            applied: &mut applied,
            health: &self.health,
            metrics: &self.metrics,
        };
        let runner = Runner::new(min, period, tokio::time::Instant::now());
        let ended = sync_loop.run(&mut source, runner, stop).await;
        (ended, maps.maps)
    }

    /// Syncs so far: the `_count` of kube-proxy's sync histogram.
    fn syncs(&self) -> u64 {
        let text = self.metrics.render();
        let line = text
            .lines()
            .find(|l| l.starts_with("kubeproxy_sync_proxy_rules_duration_seconds_count"))
            .expect("the sync histogram");
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }
}

/// Upstream's minimum interval with a real sync: 1,000 changes within it
/// are one more sync (after the start-up one), and the maps end on the last
/// change.
#[tokio::test(start_paused = true)]
async fn a_burst_of_a_thousand_changes_is_two_syncs_and_converges() {
    let (harness, source, maps) = Harness::new(Duration::from_secs(60));
    let feed = {
        let snapshot = harness.snapshot.clone();
        let changes = harness.changes.clone();
        async move {
            // Four changes a millisecond (tokio's timer resolution): the
            // burst lasts a quarter of the minimum interval.
            for i in 0..1000u32 {
                if i % 4 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let last = 1 + i % 250;
                *snapshot.lock().unwrap() = web(&format!("10.244.2.{last}"));
                changes.send(()).unwrap();
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    };
    let maps = harness
        .run(
            source,
            maps,
            Duration::from_secs(1),
            Duration::from_secs(30),
            feed,
        )
        .await;
    assert_eq!(
        harness.syncs(),
        2,
        "the start-up sync and one for the burst"
    );
    let backends: Vec<String> = maps
        .backends
        .values()
        .map(|b| {
            crate::datapath::codec::backend_from_value(b)
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(backends, vec!["10.244.2.250:8080".to_owned()]);
}

/// Upstream's maximum interval: with no change, a sync every period.
#[tokio::test(start_paused = true)]
async fn with_no_change_the_sync_period_still_syncs() {
    let (harness, source, maps) = Harness::new(Duration::from_secs(60));
    let stop = tokio::time::sleep(Duration::from_secs(65));
    harness
        .run(
            source,
            maps,
            Duration::from_secs(1),
            Duration::from_secs(30),
            stop,
        )
        .await;
    assert_eq!(harness.syncs(), 3, "at 0, 30 and 60 s");
}

/// Upstream's retry interval: a failed apply is retried without a change
/// and without waiting for the period; once the maps take writes again the
/// retry converges.
#[tokio::test(start_paused = true)]
async fn a_failed_apply_is_retried_before_the_period() {
    let (harness, source, maps) = Harness::new(Duration::from_secs(60));
    harness.broken.store(true, Ordering::SeqCst);
    let heal = {
        let broken = harness.broken.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(3500)).await;
            broken.store(false, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    };
    let maps = harness
        .run(
            source,
            maps,
            Duration::from_secs(1),
            Duration::from_secs(30),
            heal,
        )
        .await;
    // Failed at 0, 1 and 3 s; healed at 3.5 s; the retry at 7 s applies.
    assert_eq!(harness.syncs(), 4);
    assert_eq!(maps.frontends.len(), 1);
    assert!(maps.dangling().is_empty());
}

/// kube-proxy's health rule end to end, over HTTP: 200 after a sync, 503
/// once a queued change has waited past the timeout because every apply
/// fails, 200 again after the sync that succeeds.
#[tokio::test]
async fn healthz_turns_503_when_syncs_stall_and_200_when_they_recover() {
    let (harness, source, maps) = Harness::new(Duration::from_millis(400));
    let address = health::serve(
        "127.0.0.1:0".parse().unwrap(),
        harness.health.clone(),
        harness.metrics.clone(),
    )
    .await
    .unwrap();
    let until = |want: u16| async move {
        for _ in 0..100 {
            if http::get(address, "/healthz").await.0 == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    let script = async {
        assert!(until(200).await, "healthy after the start-up sync");
        harness.broken.store(true, Ordering::SeqCst);
        *harness.snapshot.lock().unwrap() = web("10.244.1.8");
        harness.changes.send(()).unwrap();
        assert_eq!(http::get(address, "/healthz").await.0, 200, "not late yet");
        tokio::time::sleep(Duration::from_millis(600)).await;
        let (status, body) = http::get(address, "/healthz").await;
        assert_eq!(status, 503, "{body}");
        harness.broken.store(false, Ordering::SeqCst);
        assert!(until(200).await, "healthy after the retry applied");
    };
    let maps = harness
        .run(
            source,
            maps,
            Duration::from_millis(50),
            Duration::from_millis(200),
            script,
        )
        .await;
    let ports: Vec<u32> = maps
        .backends
        .values()
        .map(|b| u32::from_be(b.addr_be))
        .collect();
    assert_eq!(
        ports,
        vec![u32::from(std::net::Ipv4Addr::new(10, 244, 1, 8))]
    );
}

/// A [`Fed`] source whose Node object exists only between two times after
/// the start (`None`: never).
struct NodeBetween {
    fed: Fed,
    start: tokio::time::Instant,
    present: Option<(Duration, Duration)>,
}

impl Source for NodeBetween {
    fn snapshot(&self) -> impl Future<Output = Result<Snapshot, SourceError>> + Send {
        let age = self.start.elapsed();
        let present = self
            .present
            .is_some_and(|(from, until)| age >= from && age < until);
        let result = if present {
            Ok(self.fed.snapshot.lock().unwrap().clone())
        } else {
            Err(SourceError::NodeMissing {
                server: "https://api.test".into(),
                node: "node-a".into(),
            })
        };
        std::future::ready(result)
    }
    async fn changed(&mut self) {
        self.fed.changed().await
    }
}

/// kube-proxy's NodeManager (pkg/proxy/node.go) waits five minutes for its
/// Node and then fails to start: a Node that never appears ends the loop
/// with an error that names the flag to check, after five minutes and not
/// before, and nothing was synced meanwhile.
#[tokio::test(start_paused = true)]
async fn a_node_that_never_appears_fails_the_start_after_five_minutes() {
    let (harness, fed, maps) = Harness::new(Duration::from_secs(60));
    let start = tokio::time::Instant::now();
    let source = NodeBetween {
        fed,
        start,
        present: None,
    };
    let stop = tokio::time::sleep(Duration::from_secs(20 * 60));
    let (ended, maps) = harness
        .run_until(
            source,
            maps,
            Duration::from_secs(1),
            Duration::from_secs(30),
            stop,
        )
        .await;
    let err = ended.expect_err("the start fails");
    assert!(err.to_string().contains("--node-name"), "{err}");
    let waited = start.elapsed();
    assert!(
        waited >= NODE_WAIT && waited < NODE_WAIT + Duration::from_secs(31),
        "gave up after {waited:?}"
    );
    assert_eq!(harness.syncs(), 0);
    assert!(maps.frontends.is_empty());
}

/// A Node that appears within the wait is synced; once synced, a Node that
/// goes missing again never ends the loop (the programmed maps keep
/// serving), however long it stays away.
#[tokio::test(start_paused = true)]
async fn once_synced_a_missing_node_never_ends_the_loop() {
    let (harness, fed, maps) = Harness::new(Duration::from_secs(60));
    let source = NodeBetween {
        fed,
        start: tokio::time::Instant::now(),
        present: Some((Duration::from_secs(4 * 60), Duration::from_secs(6 * 60))),
    };
    let stop = tokio::time::sleep(Duration::from_secs(20 * 60));
    let maps = harness
        .run(
            source,
            maps,
            Duration::from_secs(1),
            Duration::from_secs(30),
            stop,
        )
        .await;
    assert!(harness.syncs() >= 1, "synced while the Node was there");
    assert_eq!(maps.frontends.len(), 1, "and kept what it programmed");
}
