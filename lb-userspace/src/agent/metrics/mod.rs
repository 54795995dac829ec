//! The agent's Prometheus endpoint (`--metrics-bind-address`, kube-proxy's
//! flag and port: `127.0.0.1:10249`, path `/metrics`).
//!
//! kube-proxy's names where kube-proxy has the metric
//! (pkg/proxy/metrics/metrics.go, with its buckets and its `ip_family`
//! label), so its dashboards and alerts keep working:
//! - `kubeproxy_sync_proxy_rules_duration_seconds` (histogram; its
//!   `_count` counts syncs), `..._last_timestamp_seconds` (last successful
//!   sync), `..._last_queued_timestamp_seconds` (last change queued);
//! - `kubeproxy_network_programming_duration_seconds`: from each changed
//!   EndpointSlice's `endpoints.kubernetes.io/last-change-trigger-time` to
//!   the map write (see `programming`);
//! - `kubeproxy_proxy_healthz_total{code}`, `kubeproxy_proxy_livez_total{code}`.
//!
//! Ours, under `lb_`:
//! - `lb_sync_failures_total{stage}` (kube-proxy's is per backend:
//!   `..._iptables_restore_failures_total`, `..._nftables_sync_failures_total`);
//! - `lb_resync_repaired_entries_total{map}`: entries the periodic resync
//!   found different in the maps from what the agent wrote, and rewrote;
//! - `lb_skipped_objects{reason}`: objects (or parts of them) not served,
//!   by problem code, every code at 0 when nothing has it, so a dashboard
//!   sees a problem clear rather than a series vanish;
//! - `lb_map_entries{map}` / `lb_map_capacity{map}`, packets by reason and
//!   per Service, read from the datapath at each scrape, and
//!   `lb_table_reader_waits_total{wait}` (see `datapath`);
//! - `lb_ct_entries{state}`, `lb_ct_expired_total`: the connection table's
//!   sweep (see `ct`).

mod ct;
mod datapath;
mod programming;

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicU64},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use hyper::StatusCode;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets, linear_buckets},
    },
    registry::Registry,
};

pub use ct::CtMetrics;
pub use datapath::{DatapathReader, DatapathReading, MapFill, ServicePackets};
pub use programming::{Pending, TriggerTimes};

use super::http;
use crate::model::{Problem, ProblemCode, Severity};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// kube-proxy's label on its sync metrics; this datapath is IPv4.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FamilyLabel {
    ip_family: &'static str,
}

const IPV4: FamilyLabel = FamilyLabel { ip_family: "IPv4" };

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabel {
    map: &'static str,
}

type Seconds = Gauge<f64, AtomicU64>;
type Histograms = Family<FamilyLabel, Histogram, fn() -> Histogram>;

/// kube-proxy's `SyncProxyRulesLatency` buckets: 1 ms doubling 15 times.
fn sync_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// kube-proxy's `NetworkProgrammingLatency` buckets: 0 (its `merge` starts
/// from a zero bucket), 0.25 s, 0.5 s, 1..59 s, 60..115 s by 5, 2..5 min by
/// 30 s.
fn programming_histogram() -> Histogram {
    let buckets = std::iter::once(0.0)
        .chain(linear_buckets(0.25, 0.25, 2))
        .chain(linear_buckets(1.0, 1.0, 59))
        .chain(linear_buckets(60.0, 5.0, 12))
        .chain(linear_buckets(120.0, 30.0, 7));
    Histogram::new(buckets)
}

/// The agent's metrics; cheap to share.
pub struct Metrics {
    registry: Registry,
    skipped: Family<ReasonLabel, Gauge>,
    sync_duration: Histograms,
    last_synced: Family<FamilyLabel, Seconds>,
    last_queued: Family<FamilyLabel, Seconds>,
    programming: Histograms,
    sync_failures: Family<StageLabel, Counter>,
    repaired: Family<MapLabel, Counter>,
    healthz: Family<CodeLabel, Counter>,
    livez: Family<CodeLabel, Counter>,
    datapath: datapath::Collector,
    /// The connection table's sweep (`lb_ct_*`).
    pub ct: CtMetrics,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut metrics = Metrics {
            registry: Registry::default(),
            skipped: Family::default(),
            sync_duration: Family::new_with_constructor(sync_histogram),
            last_synced: Family::default(),
            last_queued: Family::default(),
            programming: Family::new_with_constructor(programming_histogram),
            sync_failures: Family::default(),
            repaired: Family::default(),
            healthz: Family::default(),
            livez: Family::default(),
            datapath: datapath::Collector::default(),
            ct: CtMetrics::default(),
        };
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.registry = registry;
        metrics.count_problems(&[]);
        // Present from the start, as upstream's are once registered.
        let _ = metrics.sync_duration.get_or_create(&IPV4);
        let _ = metrics.programming.get_or_create(&IPV4);
        let _ = metrics.last_synced.get_or_create(&IPV4);
        let _ = metrics.last_queued.get_or_create(&IPV4);
        for stage in ["source", "apply"] {
            let _ = metrics.sync_failures.get_or_create(&StageLabel { stage });
        }
        for map in datapath::AGENT_MAPS {
            let _ = metrics.repaired.get_or_create(&MapLabel { map });
        }
        Arc::new(metrics)
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            self.sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            self.last_synced.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            self.last_queued.clone(),
        );
        registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            self.programming.clone(),
        );
        registry.register(
            "kubeproxy_proxy_healthz",
            "Cumulative proxy healthz HTTP status",
            self.healthz.clone(),
        );
        registry.register(
            "kubeproxy_proxy_livez",
            "Cumulative proxy livez HTTP status",
            self.livez.clone(),
        );
        registry.register(
            "lb_sync_failures",
            "Syncs that failed, by stage: reading the source, or writing the maps",
            self.sync_failures.clone(),
        );
        registry.register(
            "lb_resync_repaired_entries",
            "Map entries the periodic resync found changed behind the agent's back and rewrote",
            self.repaired.clone(),
        );
        registry.register(
            "lb_skipped_objects",
            "Objects or parts of them not served, by problem code (see lb status)",
            self.skipped.clone(),
        );
        registry.register_collector(Box::new(self.datapath.clone()));
        self.ct.register(registry);
    }

    /// Sets the gauge to the current problems; warnings (served anyway)
    /// are not skipped objects.
    pub fn count_problems(&self, problems: &[Problem]) {
        for code in ProblemCode::ALL {
            let count = problems
                .iter()
                .filter(|p| p.code == code && p.severity == Severity::Error)
                .count();
            self.skipped
                .get_or_create(&ReasonLabel {
                    reason: code.as_str(),
                })
                .set(count as i64);
        }
    }

    /// A change was queued for the next sync.
    pub fn queued(&self) {
        self.last_queued.get_or_create(&IPV4).set(unix_seconds());
    }

    /// A sync ran for `seconds`; `applied`: it succeeded.
    pub fn synced(&self, seconds: f64, applied: bool) {
        self.sync_duration.get_or_create(&IPV4).observe(seconds);
        if applied {
            self.last_synced.get_or_create(&IPV4).set(unix_seconds());
        }
    }

    /// A sync failed at `stage` (`source` or `apply`).
    pub fn sync_failed(&self, stage: &'static str) {
        self.sync_failures
            .get_or_create(&StageLabel { stage })
            .inc();
    }

    /// One EndpointSlice change reached the maps `seconds` after its trigger.
    pub fn programmed(&self, seconds: f64) {
        self.programming.get_or_create(&IPV4).observe(seconds);
    }

    /// The periodic resync rewrote `count` entries of `map`.
    pub fn repaired(&self, map: &'static str, count: u64) {
        self.repaired.get_or_create(&MapLabel { map }).inc_by(count);
    }

    /// A health probe was answered with `code`.
    pub fn count_probe(&self, healthz: bool, code: u16) {
        let family = if healthz { &self.healthz } else { &self.livez };
        family.get_or_create(&CodeLabel { code }).inc();
    }

    /// Where the datapath's fill levels and counters are read at each
    /// scrape; until then they are not exported.
    pub fn attach_datapath(&self, reader: Box<dyn DatapathReader>) {
        self.datapath.attach(reader);
    }

    /// The writer's tally of its waits for table readers, exported from
    /// then on.
    pub fn attach_table_reader_waits(&self, waits: Arc<crate::datapath::kernel::ReaderWaits>) {
        self.datapath.attach_reader_waits(waits);
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Binds now (so a taken port fails the start, with the flag to change),
/// then serves `/metrics` in the background.
pub async fn serve(address: SocketAddr, metrics: Arc<Metrics>) -> Result<SocketAddr> {
    let handler: http::Handler = Arc::new(move |path| {
        if path == "/metrics" {
            http::respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                metrics.render(),
            )
        } else {
            http::respond(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found: try /metrics\n",
            )
        }
    });
    http::serve(address, "metrics", "--metrics-bind-address", handler).await
}

#[cfg(test)]
mod tests;
