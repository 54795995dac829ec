//! Reading the agent's own log: when it finished a sync. The agent logs
//! `synced` right after the last map write of a plan, stamped with the wall
//! clock (tracing's RFC 3339 time, microseconds), so "event -> last map
//! write" is that stamp minus the event's wall time, without polling the
//! maps from outside (which would compete with the agent for the CPU and
//! round every figure up to the polling period).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One `synced` line of the agent's log.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncedLine {
    /// When the line was written: just after the plan's last map write.
    pub at: SystemTime,
    /// The agent's own measure of the sync (snapshot, plan, apply).
    pub elapsed_ms: u64,
    /// Frontends the desired state had.
    pub frontends: usize,
    /// The sync's phases as the agent timed them (`snapshot`, `prelude`,
    /// `desired`, `plan`, `outputs`, `apply`: its `<phase>_us` fields), in
    /// ms.
    pub phases: Vec<(&'static str, f64)>,
}

/// The phases an agent's `synced` line times, in the order they run.
/// `apply` ends at the write that makes the plan's selection effective
/// (where the agent observes its programming latency, as kube-proxy
/// does); `cleanup` follows it (purges, removals, the wait for readers of
/// tables rewritten in place, the release of tables).
pub const PHASES: [&str; 7] = [
    "snapshot", "prelude", "desired", "plan", "outputs", "apply", "cleanup",
];
/// Each phase's figure subject.
pub const PHASE_SUBJECTS: [&str; 7] = [
    "sync: snapshot",
    "sync: prelude (trigger times, masquerade address)",
    "sync: desired",
    "sync: plan",
    "sync: outputs",
    "sync: apply",
    "sync: cleanup (after the programming latency: purges, removals)",
];
/// The figure subject of the time from spawn to the datapath attached:
/// loading the programs, with the source's first read running beside it
/// (a manifest directory parsed meanwhile, a cluster source listing).
pub const LOAD: &str = "spawn -> datapath attached (program load; the source read beside it)";

/// Every `synced` line of `log`, in order.
pub fn synced_lines(log: &str) -> Vec<SyncedLine> {
    log.lines().filter_map(synced_line).collect()
}

fn synced_line(line: &str) -> Option<SyncedLine> {
    let mut words = line.split_whitespace();
    let at = parse_rfc3339(words.next()?)?;
    let rest: Vec<&str> = words.collect();
    if !rest.contains(&"synced") {
        return None;
    }
    let field = |name: &str| -> Option<u64> {
        rest.iter()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
    };
    let phases = PHASES
        .iter()
        .filter_map(|phase| Some((*phase, field(&format!("{phase}_us"))? as f64 / 1e3)))
        .collect();
    Some(SyncedLine {
        at,
        elapsed_ms: field("elapsed_ms")?,
        frontends: field("frontends")? as usize,
        phases,
    })
}

/// When the agent logged that its datapath was loaded and attached (the
/// programs verified, the pinned maps read): the start of its first sync.
pub fn attached_at(log: &str) -> Option<SystemTime> {
    log.lines()
        .find(|line| line.contains("datapath attached"))
        .and_then(|line| parse_rfc3339(line.split_whitespace().next()?))
}

/// The phase figures of one sync, `(subject, ms)`: from `from` (the
/// agent's spawn, for a full sync) to its datapath attached when given,
/// then each phase the agent timed.
pub fn phase_figures(
    line: &SyncedLine,
    attached: Option<(SystemTime, SystemTime)>,
) -> Vec<(&'static str, f64)> {
    let mut figures = Vec::new();
    if let Some((from, attached)) = attached {
        figures.push((LOAD, millis_between(from, attached)));
    }
    let subject = |phase: &str| {
        let index = PHASES.iter().position(|p| *p == phase)?;
        Some(PHASE_SUBJECTS[index])
    };
    figures.extend((line.phases.iter()).filter_map(|(phase, ms)| Some((subject(phase)?, *ms))));
    figures
}

/// `YYYY-MM-DDTHH:MM:SS[.frac]Z` (UTC, as tracing writes it).
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock = clock.split(':').map(|p| p.parse::<u64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let nanos = if fraction.is_empty() {
        0
    } else {
        if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        format!("{fraction:0<9}").parse::<u32>().ok()?
    };
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm, the
/// inverse of `lib.rs`'s `civil_date`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `later - earlier` in milliseconds; negative when the stamp precedes the
/// event (which would mean the line belongs to an earlier sync).
pub fn millis_between(earlier: SystemTime, later: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_secs_f64() * 1e3,
        Err(e) => -e.duration().as_secs_f64() * 1e3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2026-12-01T09:38:50.123456Z  INFO lb::agent: datapath attached frontends=0 backends=0 pin_dir=/sys/fs/bpf/x
2026-12-01T09:38:50.200000Z  INFO lb::agent::sync: synced frontends=1008 changes=1008 tables=1000 elapsed_ms=61
2026-12-01T09:38:52.5Z  WARN lb::agent::sync: skipped: bench/x: no endpoints
2026-12-01T09:38:53.000001Z  INFO lb::agent::sync: synced frontends=1008 changes=0 tables=1 elapsed_ms=7 snapshot_us=1500 prelude_us=500 desired_us=250 plan_us=125 outputs_us=2000 apply_us=3000
";

    #[test]
    fn finds_the_synced_lines_with_their_stamps() {
        let lines = synced_lines(LOG);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].elapsed_ms, 61);
        assert_eq!(lines[0].frontends, 1008);
        assert_eq!(lines[1].elapsed_ms, 7);
        assert!(lines[0].phases.is_empty());
        assert_eq!(
            lines[1].phases,
            [
                ("snapshot", 1.5),
                ("prelude", 0.5),
                ("desired", 0.25),
                ("plan", 0.125),
                ("outputs", 2.0),
                ("apply", 3.0)
            ]
        );
        let gap = millis_between(lines[0].at, lines[1].at);
        assert!((gap - 2800.001).abs() < 1e-6, "{gap}");
    }

    #[test]
    fn the_attach_line_and_the_phases_make_figures() {
        let attached = attached_at(LOG).expect("attached");
        let line = &synced_lines(LOG)[1];
        let figures = phase_figures(
            line,
            Some((attached - Duration::from_millis(100), attached)),
        );
        assert_eq!(figures.len(), 7);
        assert_eq!(figures[0].0, LOAD);
        assert!((figures[0].1 - 100.0).abs() < 1e-6);
        assert_eq!(figures[6], ("sync: apply", 3.0));
    }

    #[test]
    fn rfc3339_agrees_with_the_unix_clock() {
        let at = parse_rfc3339("2026-12-01T00:00:00Z").unwrap();
        // 2026-12-01 is day 20,788 (lib.rs's civil_date test).
        assert_eq!(at, UNIX_EPOCH + Duration::from_secs(20_788 * 86_400));
        let leap = parse_rfc3339("2000-02-29T12:30:15.25Z").unwrap();
        let expected = 11_016 * 86_400 + 12 * 3600 + 30 * 60 + 15;
        assert_eq!(leap, UNIX_EPOCH + Duration::new(expected, 250_000_000));
    }

    #[test]
    fn rejects_what_is_not_a_stamp() {
        assert_eq!(parse_rfc3339("2026-12-01 09:38:50Z"), None);
        assert_eq!(parse_rfc3339("2026-13-01T09:38:50Z"), None);
        assert_eq!(parse_rfc3339("2026-12-01T09:38:50.12x4Z"), None);
        assert_eq!(parse_rfc3339("2026-12-01T09:38:50"), None);
        assert!(synced_lines("synced elapsed_ms=3 frontends=1").is_empty());
    }

    #[test]
    fn an_earlier_stamp_is_negative() {
        let t = UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(millis_between(t, t + Duration::from_millis(5)), 5.0);
        assert_eq!(millis_between(t + Duration::from_millis(5), t), -5.0);
    }
}
