//! Counters that outgrew their pinned map on upgrade: the verdict and drop
//! reasons counter (`lb_stats_v1`) gains an entry whenever a version adds
//! a reason, and the loader refuses a pinned map of another size. Counters
//! are not state a connection needs, so the outgrown pin is released and
//! the new datapath starts a fresh map (Prometheus reads the reset as a
//! counter restart); the old programs keep counting into the old map until
//! their links are swapped.

use std::{io, path::Path};

use aya::maps::MapData;
use lb_common::{STATS, reason::REASON_COUNT};

/// Releases the pinned counters map under `dir` when it holds fewer
/// reasons than this build counts; true when it did.
pub(super) fn release_outgrown_counters(dir: &Path) -> anyhow::Result<bool> {
    let pin = dir.join(STATS);
    if !pin.exists() {
        return Ok(false);
    }
    let entries = MapData::from_pin(&pin)
        .and_then(|map| map.info())
        .map(|info| info.max_entries())
        .map_err(|err| anyhow::anyhow!("reading the pinned {}: {err}", pin.display()))?;
    if entries >= REASON_COUNT {
        return Ok(false);
    }
    match std::fs::remove_file(&pin) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(anyhow::anyhow!("releasing {}: {err}", pin.display()));
        }
    }
    tracing::info!(
        map = STATS,
        pinned = entries,
        needed = REASON_COUNT,
        "counters map outgrown by this version: starting a fresh one"
    );
    Ok(true)
}
