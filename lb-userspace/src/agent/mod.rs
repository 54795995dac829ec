//! `lb agent`: keeps the datapath's maps equal to what the source says.
//!
//! source (manifest directory or API server) -> desired state (pure) -> plan (pure) ->
//! apply (ordered map writes). The datapath is pinned, so the agent can be
//! stopped, killed or upgraded while established connections keep flowing.
//!
//! `datapath` brings the datapath up, `sync` is one reconciliation,
//! `status` what it publishes for `lb status`, `metrics` the Prometheus
//! endpoint beside the loop; this module is the loop that decides when to
//! reconcile.
pub mod config;
mod datapath;
mod dry_run;
pub mod metrics;
pub mod status;
mod sync;

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

pub use config::{AgentConfig, SourceConfig};
use sync::{Outputs, StatusOutput, Syncer};

use metrics::Metrics;

use crate::{
    datapath::DatapathMaps,
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
    let datapath = datapath::start(config)?;
    let mut maps = datapath.maps().context("opening the datapath maps")?;
    let mut applied = Applied::read(&maps).context("reading the pinned maps")?;
    info!(
        frontends = applied.frontends.len(),
        backends = applied.backends.len(),
        pin_dir = %config.pin_dir.display(),
        source = name,
        "datapath attached"
    );
    let metrics = Metrics::new();
    if let Some(address) = config.metrics_address {
        metrics::serve(address, metrics.clone()).await?;
    }
    let outputs = Outputs {
        status: Some(StatusOutput {
            state_dir: config.state_dir.clone(),
            source: name,
        }),
        metrics: Some(metrics),
    };
    let mut syncer = Syncer::new(config.node.clone(), config.rules.clone(), outputs);
    reconcile_until_stopped(
        &mut source,
        &mut syncer,
        &mut maps,
        &mut applied,
        config.resync,
    )
    .await?;
    info!("stopping; the pinned datapath keeps serving established and new connections");
    Ok(())
}

/// Syncs now, then on every change of the source and every `resync`, until
/// SIGINT or SIGTERM.
async fn reconcile_until_stopped(
    source: &mut impl Source,
    syncer: &mut Syncer,
    maps: &mut dyn DatapathMaps,
    applied: &mut Applied,
    resync: Duration,
) -> Result<()> {
    syncer.sync(source, maps, applied).await;
    let mut resync = tokio::time::interval(resync);
    resync.tick().await;
    let mut terminate = signal(SignalKind::terminate())?;
    loop {
        // A wake-up dropped because another branch won is no loss: every
        // branch that does not stop the loop syncs from a fresh snapshot.
        tokio::select! {
            () = source.changed() => syncer.sync(source, maps, applied).await,
            _ = resync.tick() => syncer.sync(source, maps, applied).await,
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    Ok(())
}
