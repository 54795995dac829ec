//! The connection table's sweep: every [`SWEEP_PERIOD`] the agent reads
//! both tables in batches, removes the flows whose time ran out
//! (`lb_common::ct::timeout_s` of their state, counted from the fresher of
//! their two entries, so a flow whose server alone talks stays alive), and
//! publishes live flows by state and the expired count (`lb_ct_*`). It logs,
//! at most once per [`WARN_EVERY`], when inserts were refused or when the
//! table of assured flows is nearly full (its LRU then evicts idle
//! established connections: raise `--ct-entries`).
//!
//! The datapath never depends on the sweep to work (an LRU makes room by
//! itself): the sweep keeps expired flows from holding room and keeps a
//! stale flow (a closed connection, a finished DNS exchange) from
//! translating a later packet that reuses its tuple.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use lb_common::{Ct4Key, ct::expired, reason::Reason};
use tracing::{debug, warn};

use super::{ct_flows::Flows, metrics::Metrics};
use crate::datapath::{KernelMaps, MapsError, kernel::monotonic_s};

/// How often the sweep runs: well under the shortest timeout that matters
/// for room (an unreplied UDP flow's 30 s).
pub const SWEEP_PERIOD: Duration = Duration::from_secs(10);
/// The shortest time between two warnings of one kind.
pub const WARN_EVERY: Duration = Duration::from_secs(300);
/// The assured table's fill above which the sweep warns.
const NEARLY_FULL: f64 = 0.9;

/// What one sweep found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Judgement {
    /// Entries of expired flows (both directions where both exist).
    pub expired: Vec<Ct4Key>,
    pub expired_flows: u64,
    /// Live flows by state.
    pub live: Vec<(u8, u64)>,
    /// Entries read from each table: (assured flows, new flows).
    pub entries: (u64, u64),
}

/// Which flows expired at `now_s` (pure: the clock is the caller's).
pub fn judge(flows: &Flows, now_s: u32) -> Judgement {
    let mut judgement = Judgement::default();
    let mut live: HashMap<u8, u64> = HashMap::new();
    for flow in flows.iter() {
        if expired(flow.state, flow.last_seen_s, now_s) {
            judgement.expired.extend(flow.keys());
            judgement.expired_flows += 1;
        } else {
            *live.entry(flow.state).or_default() += 1;
        }
    }
    judgement.live = live.into_iter().collect();
    judgement.live.sort_unstable();
    judgement.expired.sort_unstable();
    judgement
}

/// Whether `new_flows` entered within one period overran a new-flow table
/// of `capacity` entries (two per flow): then unassured flows displaced
/// each other before they could complete a handshake, a flood.
pub fn is_flood(new_flows: u64, capacity: u64) -> bool {
    capacity > 0 && new_flows.saturating_mul(2) > capacity
}

/// Sweeps once at `now_s`: removes what [`judge`] found expired, unless a
/// packet refreshed it meanwhile (each entry is read again first).
pub fn sweep_once(maps: &mut KernelMaps, now_s: u32) -> Result<Judgement, MapsError> {
    let (entries, assured) = maps.connections_batched()?;
    let flows = Flows::of(&entries);
    let mut judgement = judge(&flows, now_s);
    judgement.entries = (assured as u64, (entries.len() - assured) as u64);
    drop(entries);
    for key in &judgement.expired {
        let still_expired = maps
            .connection(key)?
            .is_some_and(|v| expired(v.state, v.last_seen_s, now_s));
        if still_expired {
            maps.remove_connection(key)?;
        }
    }
    super::backend_connections::recount(maps, &flows, now_s)?;
    Ok(judgement)
}

/// Runs the sweep on its own thread for as long as the agent runs.
pub fn spawn(maps: KernelMaps, metrics: Arc<Metrics>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ct-sweep".into())
        .spawn(move || Sweeper::new(maps, metrics).run())
        .map(drop)
}

struct Sweeper {
    maps: KernelMaps,
    metrics: Arc<Metrics>,
    refused_before: u64,
    /// `dnat_new` at the last sweep, and when.
    new_before: (u64, Instant),
    warned: HashMap<&'static str, Instant>,
}

impl Sweeper {
    fn new(maps: KernelMaps, metrics: Arc<Metrics>) -> Sweeper {
        let refused_before = maps.stat(Reason::DropCtInsertFailed).unwrap_or(0);
        let new_before = (maps.stat(Reason::DnatNew).unwrap_or(0), Instant::now());
        Sweeper {
            maps,
            metrics,
            refused_before,
            new_before,
            warned: HashMap::new(),
        }
    }

    fn run(mut self) {
        loop {
            std::thread::sleep(SWEEP_PERIOD);
            let started = Instant::now();
            match sweep_once(&mut self.maps, monotonic_s()) {
                Ok(judgement) => {
                    let seconds = started.elapsed().as_secs_f64();
                    debug!(
                        expired = judgement.expired_flows,
                        seconds, "connection table swept"
                    );
                    self.metrics
                        .ct
                        .swept(&judgement.live, judgement.expired_flows, seconds);
                    self.check_capacity(judgement.entries);
                }
                Err(err) => self.warn(
                    "sweep",
                    format!("sweeping the connection table failed: {err}"),
                ),
            }
        }
    }

    /// Warns of refused inserts, of a nearly full table of assured flows
    /// and of floods, from the sweep's own count of `entries` (assured, new):
    /// no second walk of the tables.
    fn check_capacity(&mut self, entries: (u64, u64)) {
        if let Ok(refused) = self.maps.stat(Reason::DropCtInsertFailed) {
            if refused > self.refused_before {
                let new = refused - self.refused_before;
                self.warn(
                    "refused",
                    format!(
                        "the connection table refused {new} new flows (the kernel had no memory \
                         for their entries): they were dropped; check the node's memory"
                    ),
                );
            }
            self.refused_before = refused;
        }
        let (assured_capacity, new_capacity) = self.maps.connection_capacities();
        self.check_flood(u64::from(new_capacity));
        if assured_capacity > 0 && entries.0 as f64 >= NEARLY_FULL * f64::from(assured_capacity) {
            self.warn(
                "full",
                format!(
                    "the connection table of established flows holds {} of {assured_capacity} \
                     entries: idle connections are being evicted; start the agent with a larger \
                     --ct-entries",
                    entries.0
                ),
            );
        }
    }

    /// Publishes the new-flow rate since the last sweep and warns of a flood.
    fn check_flood(&mut self, capacity: u64) {
        let Ok(now_new) = self.maps.stat(Reason::DnatNew) else {
            return;
        };
        let (before, since) = self.new_before;
        self.new_before = (now_new, Instant::now());
        let new_flows = now_new.saturating_sub(before);
        let seconds = since.elapsed().as_secs_f64().max(f64::EPSILON);
        let flood = is_flood(new_flows, capacity);
        let per_second = new_flows as f64 / seconds;
        self.metrics.ct.new_flows(per_second, flood);
        if flood {
            self.warn(
                "flood",
                format!(
                    "a flood of new flows: {per_second:.0} per second overran the table of new \
                     flows ({capacity} entries); established connections are not displaced, \
                     new ones may need a retry"
                ),
            );
        }
    }

    /// Logs `message` unless a warning of this `kind` was logged within
    /// [`WARN_EVERY`].
    fn warn(&mut self, kind: &'static str, message: String) {
        let now = Instant::now();
        if self
            .warned
            .get(kind)
            .is_some_and(|last| now.duration_since(*last) < WARN_EVERY)
        {
            return;
        }
        self.warned.insert(kind, now);
        warn!("{message}");
    }
}

#[cfg(test)]
mod tests;
