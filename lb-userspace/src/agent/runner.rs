//! When to sync: kube-proxy's bounded-frequency runner
//! (pkg/proxy/runner/bounded_frequency_runner.go), as pure timing logic.
//!
//! - A change requests a sync; requests that arrive while a sync runs or
//!   within `min_interval` of the last one's end coalesce into one sync at
//!   the end of that interval (`--min-sync-period`).
//! - A sync runs at least once per `max_interval` with no request at all:
//!   the periodic resync (`--sync-period`), which re-reads the maps.
//! - A failed sync is retried without waiting for the next change.
//!   kube-proxy retries once after `syncPeriod` (its proxiers call
//!   `RetryAfter(syncPeriod)`); lb retries sooner, with a backoff that
//!   starts at the minimum interval (at least one second) and doubles up to
//!   that same bound, so a transient failure costs seconds, not a period,
//!   and a lasting one is not hammered.
//!
//! The runner holds no clock: callers pass `now`, so every rule is tested
//! with plain instants.

use std::time::Duration;

use tokio::time::Instant;

/// Why a sync is due; a periodic resync also re-reads the maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// A change was requested (or the agent just started).
    Change,
    /// A failed sync is being retried.
    Retry,
    /// `max_interval` passed: re-read the maps and repair drift.
    Resync,
}

/// The first retry waits at least this long, even with no minimum interval.
const FIRST_RETRY_FLOOR: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Runner {
    min_interval: Duration,
    max_interval: Duration,
    /// A change waits to be synced.
    requested: bool,
    /// No sync starts before this: the last sync's end plus
    /// `min_interval` (at creation: now).
    earliest: Instant,
    /// The next periodic resync.
    resync_at: Instant,
    /// The next retry of a failed sync.
    retry_at: Option<Instant>,
    /// Failures in a row, for the backoff.
    failures: u32,
}

impl Runner {
    /// A runner whose first sync is due now (the start-up sync). A
    /// `max_interval` below `min_interval` (which upstream refuses, as the
    /// command line does) is raised to it.
    pub fn new(min_interval: Duration, max_interval: Duration, now: Instant) -> Runner {
        let max_interval = max_interval.max(min_interval);
        Runner {
            min_interval,
            max_interval,
            requested: true,
            earliest: now,
            resync_at: now + max_interval,
            retry_at: None,
            failures: 0,
        }
    }

    /// A change arrived: sync as soon as the minimum interval allows.
    pub fn request(&mut self) {
        self.requested = true;
    }

    /// When the next sync is due, and why. Never earlier than
    /// `min_interval` after the last sync's end; when a resync is due by
    /// then, it is the one that runs (it does all a change sync does).
    pub fn next(&self) -> (Instant, SyncKind) {
        let mut at = self.resync_at;
        if let Some(retry) = self.retry_at {
            at = at.min(retry);
        }
        if self.requested {
            at = at.min(self.earliest);
        }
        let at = at.max(self.earliest);
        let kind = if self.resync_at <= at {
            SyncKind::Resync
        } else if self.requested {
            SyncKind::Change
        } else {
            SyncKind::Retry
        };
        (at, kind)
    }

    /// A sync ended at `now`; `ok` says whether it applied. A success ends
    /// any retry (as upstream: "any successful run will abort the retry
    /// attempt"); every sync restarts the periodic interval.
    pub fn finished(&mut self, now: Instant, ok: bool) {
        self.requested = false;
        self.earliest = now + self.min_interval;
        self.resync_at = now + self.max_interval;
        if ok {
            self.failures = 0;
            self.retry_at = None;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.retry_at = Some(now + self.backoff());
        }
    }

    /// The wait before the next retry: from the minimum interval (at least
    /// a second), doubling with each failure in a row, at most
    /// `max_interval` (kube-proxy's retry interval).
    /// A sync found the source not ready yet (initial lists, the Node):
    /// the source's next wake-up syncs at once, with no minimum interval
    /// (there was no sync to space from), and without one a retry comes
    /// with the failure backoff.
    /// While it waits, the periodic resync moves on with the clock: a
    /// resync time left in the past would make every attempt due at once.
    pub fn waiting(&mut self, now: Instant) {
        self.requested = false;
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(now + self.backoff());
        self.resync_at = self.resync_at.max(now + self.max_interval);
    }

    fn backoff(&self) -> Duration {
        let first = self.min_interval.max(FIRST_RETRY_FLOOR);
        let doublings = self.failures.saturating_sub(1).min(16);
        first
            .saturating_mul(1 << doublings)
            .min(self.max_interval.max(first))
    }
}

#[cfg(test)]
mod tests;
