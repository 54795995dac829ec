//! `lb agent`: keeps the datapath's maps equal to what the source says.
//!
//! source (manifest directory) -> desired state (pure) -> plan (pure) ->
//! apply (ordered map writes). The datapath is pinned, so the agent can be
//! stopped, killed or upgraded while established connections keep flowing.
//!
//! `datapath` brings the datapath up, `sync` is one reconciliation, this
//! module is the loop that decides when to reconcile. The health and
//! metrics servers, when they come, run beside that loop.
pub mod config;
mod datapath;
mod dry_run;
mod sync;

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

pub use config::AgentConfig;
use sync::Syncer;

use crate::{
    datapath::DatapathMaps,
    plan::Applied,
    source::{ManifestDir, Source},
};

pub async fn run(config: AgentConfig) -> Result<()> {
    if config.dry_run {
        return dry_run::print_plan(&config);
    }
    let datapath = datapath::start(&config)?;
    let mut maps = datapath.maps().context("opening the datapath maps")?;
    let mut applied = Applied::read(&maps).context("reading the pinned maps")?;
    info!(
        frontends = applied.frontends.len(),
        backends = applied.backends.len(),
        pin_dir = %config.pin_dir.display(),
        "datapath attached"
    );
    let mut source = ManifestDir::watch(&config.manifests)?;
    let mut syncer = Syncer::new(config.node.clone(), config.rules.clone());
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
    syncer.sync(source, maps, applied);
    let mut resync = tokio::time::interval(resync);
    resync.tick().await;
    let mut terminate = signal(SignalKind::terminate())?;
    loop {
        // A wake-up dropped because another branch won is no loss: every
        // branch that does not stop the loop syncs from a fresh snapshot.
        tokio::select! {
            () = source.changed() => syncer.sync(source, maps, applied),
            _ = resync.tick() => syncer.sync(source, maps, applied),
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    Ok(())
}
