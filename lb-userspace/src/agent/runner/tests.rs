//! The runner's rules, each from upstream's bounded_frequency_runner.go
//! (and its test file), driven by a small discrete-event simulation.

use super::*;

const MS: Duration = Duration::from_millis(1);

/// Runs the runner over change requests at the given offsets from `start`,
/// each sync lasting `took` and succeeding when `outcome(n)` says so for
/// the n-th sync (from 1), until `until`; returns each sync's start offset
/// and kind. A change that arrives during a sync is seen after it, as the
/// agent's loop sees it.
fn simulate(
    runner: &mut Runner,
    start: Instant,
    changes: &[Duration],
    took: Duration,
    outcome: impl Fn(usize) -> bool,
    until: Duration,
) -> Vec<(Duration, SyncKind)> {
    let mut changes = changes.iter().map(|d| start + *d).peekable();
    let mut now = start;
    let mut syncs = Vec::new();
    loop {
        let (due, kind) = runner.next();
        let due = due.max(now);
        if let Some(at) = changes.next_if(|at| *at <= due) {
            now = now.max(at);
            runner.request();
            continue;
        }
        if due > start + until {
            return syncs;
        }
        syncs.push((due - start, kind));
        now = due + took;
        runner.finished(now, outcome(syncs.len()));
    }
}

/// Upstream property 1 ("Minimum Interval ... Calls to Run() during this
/// cooldown period are coalesced and deferred until the interval
/// expires"): a burst of 1,000 changes within the minimum interval is two
/// syncs, the start-up one and one at the end of the interval.
#[test]
fn a_burst_within_the_minimum_interval_is_coalesced_into_one_more_sync() {
    let start = Instant::now();
    let mut runner = Runner::new(Duration::from_secs(1), Duration::from_secs(30), start);
    let burst: Vec<Duration> = (0..1000).map(|i| MS * 10 + MS * (i % 900)).collect();
    let syncs = simulate(&mut runner, start, &burst, MS * 5, |_| true, MS * 5000);
    assert_eq!(
        syncs,
        vec![
            (Duration::ZERO, SyncKind::Change),
            (MS * 1005, SyncKind::Change)
        ],
        "the start-up sync, then one sync a minimum interval after it ended"
    );
}

/// Upstream: "At least `minInterval` must pass between the *completion*
/// of one execution and the *start* of the next"; a change after the
/// interval has passed runs at once.
#[test]
fn the_minimum_interval_counts_from_the_end_of_a_sync() {
    let start = Instant::now();
    let mut runner = Runner::new(Duration::from_secs(1), Duration::from_secs(30), start);
    let syncs = simulate(
        &mut runner,
        start,
        &[MS * 100, MS * 3000],
        MS * 400,
        |_| true,
        MS * 5000,
    );
    assert_eq!(
        syncs,
        vec![
            (Duration::ZERO, SyncKind::Change),
            (MS * 1400, SyncKind::Change),
            (MS * 3000, SyncKind::Change),
        ]
    );
}

/// Upstream property 2 ("Maximum Interval: fn is guaranteed to run at
/// least once per maxInterval ... even without explicit Run() calls"):
/// with no change at all, a resync every period after the last sync.
#[test]
fn the_maximum_interval_fires_with_no_changes() {
    let start = Instant::now();
    let mut runner = Runner::new(Duration::from_secs(1), Duration::from_secs(30), start);
    let syncs = simulate(&mut runner, start, &[], MS, |_| true, MS * 61_000);
    assert_eq!(
        syncs,
        vec![
            (Duration::ZERO, SyncKind::Change),
            (MS * 30_001, SyncKind::Resync),
            (MS * 60_002, SyncKind::Resync),
        ]
    );
}

/// Upstream property 3 ("Any error returned by fn will run again no
/// later than retryInterval ... Any successful run will abort the retry
/// attempt"): a failed sync is retried without a change, with a backoff
/// from the minimum interval doubling up to the sync period, and a success
/// stops the retries.
#[test]
fn a_failed_sync_is_retried_with_backoff_until_it_succeeds() {
    let start = Instant::now();
    let mut runner = Runner::new(Duration::from_secs(1), Duration::from_secs(30), start);
    // The first four syncs fail, the fifth succeeds.
    let syncs = simulate(
        &mut runner,
        start,
        &[],
        Duration::ZERO,
        |n| n >= 5,
        MS * 40_000,
    );
    let secs = |s: u64| Duration::from_secs(s);
    assert_eq!(
        syncs,
        vec![
            (secs(0), SyncKind::Change),
            (secs(1), SyncKind::Retry),
            (secs(3), SyncKind::Retry),
            (secs(7), SyncKind::Retry),
            (secs(15), SyncKind::Retry),
        ],
        "retries after 1, 2, 4 and 8 s, then nothing but the next resync"
    );
}

/// The backoff never waits longer than the sync period (kube-proxy's
/// retry interval: its proxiers `RetryAfter(syncPeriod)`).
#[test]
fn the_backoff_stops_at_the_sync_period() {
    let start = Instant::now();
    let mut runner = Runner::new(Duration::from_secs(1), Duration::from_secs(5), start);
    let syncs = simulate(
        &mut runner,
        start,
        &[],
        Duration::ZERO,
        |_| false,
        MS * 20_000,
    );
    let starts: Vec<u64> = syncs.iter().map(|(at, _)| at.as_secs()).collect();
    assert_eq!(starts, vec![0, 1, 3, 7, 12, 17]);
}

/// A change during a backoff waits only for the minimum interval, not for
/// the retry (upstream: "unless another trigger (like Run() ...) causes
/// it to run sooner").
#[test]
fn a_change_does_not_wait_for_a_pending_retry() {
    let start = Instant::now();
    let mut runner = Runner::new(Duration::from_secs(1), Duration::from_secs(30), start);
    runner.finished(start, false);
    runner.finished(start, false);
    runner.finished(start, false);
    assert_eq!(
        runner.next(),
        (start + Duration::from_secs(4), SyncKind::Retry)
    );
    runner.request();
    assert_eq!(
        runner.next(),
        (start + Duration::from_secs(1), SyncKind::Change)
    );
}

/// kube-proxy syncs only once its informers have listed: an attempt that
/// found the source still waiting is no sync, so the wake-up that says the
/// lists are complete syncs at once instead of a minimum interval later;
/// with no wake-up, a retry still comes (the failure backoff).
#[test]
fn a_source_that_was_not_ready_syncs_at_its_next_wake_up() {
    let start = Instant::now();
    let mut runner = Runner::new(1000 * MS, 30_000 * MS, start);
    assert_eq!(runner.next(), (start, SyncKind::Change));
    runner.waiting(start + 2 * MS);
    let (retry, kind) = runner.next();
    assert_eq!(kind, SyncKind::Retry);
    assert!(retry >= start + 1000 * MS, "{:?}", retry - start);
    runner.request();
    assert_eq!(runner.next(), (start, SyncKind::Change), "due at once");
}

/// A source that waits longer than the sync period (a Node that does not
/// exist yet) is asked again at the backoff's pace, never in a loop: the
/// next attempt is always after the last.
#[test]
fn waiting_past_the_sync_period_keeps_the_backoff_pace() {
    let start = Instant::now();
    let mut runner = Runner::new(1000 * MS, 30_000 * MS, start);
    let mut now = start;
    let mut attempts = 0;
    while now < start + 600_000 * MS {
        let (due, _) = runner.next();
        assert!(
            due > now || attempts == 0,
            "due at {:?}, now {:?}",
            due - start,
            now - start
        );
        now = due.max(now) + MS;
        runner.waiting(now);
        attempts += 1;
    }
    // 1, 2, 4, 8, 16 s, then every 30 s: about 25 attempts in ten minutes.
    assert!((20..=30).contains(&attempts), "{attempts} attempts");
}
