//! `lb agent`: keeps the datapath's maps equal to what the source says.
//!
//! source (manifest directory or API server) -> desired state (pure) -> plan (pure) ->
//! apply (ordered map writes). The datapath is pinned, so the agent can be
//! stopped, killed or upgraded while established connections keep flowing.
//!
//! `datapath` brings the datapath up (on the devices `devices` resolves),
//! `sync` is one reconciliation (with `drift`, what a resync repairs),
//! `runner` decides when to sync (kube-proxy's bounded-frequency runner),
//! `status` what it publishes for `lb status`, `health` and `metrics` the
//! HTTP endpoints beside the loop (over `http`), `service_health` the
//! `healthCheckNodePort` servers, `ct_sweep` the connection table's sweep
//! on its own thread, `xdp_targets` (over `xdp_features`) the devices
//! `--xdp-forward` may redirect pods' frames to; this module is the loop.
pub mod backend_connections;
pub mod config;
pub mod ct_flows;
pub mod ct_sweep;
mod datapath;
pub mod devices;
mod drift;
mod dry_run;
pub mod health;
mod http;
pub mod malloc_arenas;
pub mod masquerade_rules;
pub mod metrics;
mod pod_devices;
mod routes;
mod runner;
pub mod service_health;
pub mod snat_address;
pub mod snat_sysctl;
pub mod status;
mod sync;
pub mod xdp_features;
pub mod xdp_targets;

use std::{future::Future, sync::Arc};

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

pub use config::{AgentConfig, SourceConfig};
use health::Health;
use metrics::Metrics;
use runner::Runner;
use sync::{Outputs, StatusOutput, Syncer};

use crate::{
    datapath::{DatapathMaps, loader::Datapath},
    plan::Applied,
    source::{ClusterSource, ManifestDir, Source},
};

pub async fn run(config: AgentConfig) -> Result<()> {
    match &config.source {
        SourceConfig::Manifests { dir, limits } => {
            let source = ManifestDir::watch_with(dir, *limits)?;
            let name = format!("manifests:{}", dir.display());
            run_with(source, name, &config).await
        }
        SourceConfig::Cluster(cluster) => {
            let source = ClusterSource::start(cluster.clone()).await?;
            let name = format!("cluster:{}", source.server());
            run_with(source, name, &config).await
        }
    }
}

/// The one path of both modes: whatever the source, the same desired ->
/// plan -> apply.
async fn run_with(mut source: impl Source, name: String, config: &AgentConfig) -> Result<()> {
    if config.dry_run {
        return dry_run::print_plan(&mut source, config).await;
    }
    let (datapath, devices) = load_while_reading(&source, config).await?;
    reconcile_until_stopped(config, datapath, devices, &mut source, name).await?;
    info!("stopping; the pinned datapath keeps serving established and new connections");
    Ok(())
}

/// Loads and attaches the datapath (on a blocking thread: the verifier
/// takes most of a second) while the source reads what it holds, so the
/// program load and a manifest directory's first parse overlap. The read
/// itself is dropped: the first sync takes its own snapshot, which the
/// source answers from what it just read (the manifest cache; a cluster
/// source, still listing, answers "not yet" at once).
async fn load_while_reading(
    source: &impl Source,
    config: &AgentConfig,
) -> Result<(Datapath, Vec<String>)> {
    let load = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || datapath::start(&config))
    };
    let _ = source.snapshot().await;
    load.await.context("loading the datapath")?
}

/// Serves health and metrics, then syncs the datapath to `source` until
/// SIGINT or SIGTERM: at start, after changes (at most once per
/// `--min-sync-period`), at least once per `--sync-period` (re-reading the
/// maps to repair drift), and again after a failure, with backoff.
async fn reconcile_until_stopped(
    config: &AgentConfig,
    datapath: Datapath,
    devices: Vec<String>,
    source: &mut impl Source,
    source_name: String,
) -> Result<()> {
    // The writer's maps, opened once every selecting program is attached
    // (`datapath::start`): its wait for table readers trusts the per-CPU
    // counts from its first grace period on, when no program of an older
    // build still runs (`datapath/kernel/readers.rs`).
    let mut maps = datapath.maps().context("opening the datapath maps")?;
    if let Some(cgroup) = &config.cgroup {
        maps.abort_sockets_in(cgroup.clone());
    }
    let mut applied = Applied::read(&maps).context("reading the pinned maps")?;
    info!(
        frontends = applied.frontends.len(),
        backends = applied.backends.len(),
        pin_dir = %config.pin_dir.display(),
        source = %source_name,
        "datapath attached"
    );
    let metrics = Metrics::new();
    metrics.attach_table_reader_waits(maps.table_reader_waits());
    metrics.attach_datapath(Box::new(
        datapath
            .maps()
            .context("opening the datapath maps for the metrics")?,
    ));
    ct_sweep::spawn(
        datapath
            .maps()
            .context("opening the datapath maps for the connection table's sweep")?,
        metrics.clone(),
    )
    .context("starting the connection table's sweep")?;
    if config.xdp_forward {
        xdp_targets::spawn(
            datapath
                .maps()
                .context("opening the datapath maps for the XDP redirect targets")?,
            datapath::forward_devices(&devices)?,
        )
        .context("watching which devices take redirected frames (--xdp-forward)")?;
    }
    // kube-proxy's health timeout: twice the sync period.
    let health = Health::new(config.resync * 2);
    if let Some(address) = config.metrics_address {
        metrics::serve(address, metrics.clone()).await?;
    }
    if let Some(address) = config.healthz_address {
        health::serve(address, health.clone(), metrics.clone()).await?;
    }
    let outputs = Outputs {
        status: Some(StatusOutput {
            state_dir: config.state_dir.clone(),
            source: source_name,
            sync_period: config.resync,
        }),
        metrics: Some(metrics.clone()),
        health: Some(health.clone()),
        service_health: Some(service_health::ServiceHealth::new(
            health.clone(),
            health_check_listen(config),
        )),
    };
    let mut syncer = Syncer::new(config.node.clone(), config.rules.clone(), outputs);
    if config.pod_devices_auto() {
        syncer.follow_pod_devices(pod_devices::start(config, datapath, devices)?);
    }
    let mut terminate = signal(SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    let mut sync_loop = SyncLoop {
        syncer: &mut syncer,
        maps: &mut maps,
        applied: &mut applied,
        health: &health,
        metrics: &metrics,
    };
    let runner = Runner::new(
        config.min_sync_period,
        config.resync,
        tokio::time::Instant::now(),
    );
    sync_loop.run(source, runner, stop).await
}

/// How long a starting agent waits for its Node object before it gives up,
/// as kube-proxy's NodeManager (pkg/proxy/node.go) polls for it for five
/// minutes and then fails to start: a wrong `--node-name` shows as a crash
/// loop, not as a pod that silently never syncs. Once the agent has synced,
/// it never exits for the Node: the maps it programmed keep serving.
const NODE_WAIT: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// kube-proxy's rule for the health-check ports: every address unless
/// `--nodeport-addresses` narrows the NodePort addresses (cluster mode;
/// manifest mode's node addresses are all the node serves).
fn health_check_listen(config: &AgentConfig) -> service_health::Listen {
    match &config.source {
        SourceConfig::Cluster(cluster)
            if cluster.nodeport_addresses != crate::source::NodePortAddresses::All =>
        {
            service_health::Listen::NodePortAddresses
        }
        _ => service_health::Listen::On(std::net::Ipv4Addr::UNSPECIFIED.into()),
    }
}

/// What the loop syncs with, and tells of queued changes.
struct SyncLoop<'a> {
    syncer: &'a mut Syncer,
    maps: &'a mut dyn DatapathMaps,
    applied: &'a mut Applied,
    health: &'a Arc<Health>,
    metrics: &'a Arc<Metrics>,
}

impl SyncLoop<'_> {
    /// Syncs when the runner says, until `stop` resolves. A change of the
    /// source is queued (health, `..._last_queued_timestamp_seconds`) and
    /// requested; the runner coalesces requests. Fails when the Node never
    /// appears within [`NODE_WAIT`] of the start.
    async fn run(
        &mut self,
        source: &mut impl Source,
        mut runner: Runner,
        stop: impl Future,
    ) -> Result<()> {
        let started = tokio::time::Instant::now();
        let mut past_waiting = false;
        // As kube-proxy's SyncLoop: healthy while starting up ("in case
        // Sync() never succeeds": only changes the source reports can make
        // it late), and a queued-change time synthesized for the start-up
        // sync.
        self.health.updated();
        self.metrics.queued();
        tokio::pin!(stop);
        loop {
            let (due, kind) = runner.next();
            // A sync due now starts now: tokio's timer rounds a deadline up
            // to its next millisecond, which every change would pay (1 to
            // 2 ms of a 10 ms change at 10,000 Services).
            let wait = async {
                if due > tokio::time::Instant::now() {
                    tokio::time::sleep_until(due).await;
                }
            };
            // A wake-up dropped because the timer won is no loss: the sync
            // takes a fresh snapshot.
            tokio::select! {
                () = source.changed() => {
                    self.queued();
                    runner.request();
                }
                () = wait => {
                    let ok = self.syncer.sync(source, self.maps, self.applied, kind).await;
                    let now = tokio::time::Instant::now();
                    if self.syncer.waiting {
                        if self.syncer.node_missing && !past_waiting && now - started >= NODE_WAIT {
                            anyhow::bail!(
                                "this node's Node object did not appear within {} minutes: check \
                                 that --node-name (or NODE_NAME) is the node's name as \
                                 `kubectl get nodes` shows it",
                                NODE_WAIT.as_secs() / 60
                            );
                        }
                        runner.waiting(now);
                    } else {
                        past_waiting = true;
                        runner.finished(now, ok);
                    }
                }
                _ = &mut stop => break,
            }
        }
        Ok(())
    }

    fn queued(&self) {
        self.health.queued_update();
        self.metrics.queued();
    }
}

#[cfg(test)]
mod tests;
