//! `lb status`: what the running agent published (see `agent::status`)
//! and how full the pinned maps are, for people (a summary and tables) or
//! scripts (`-o json`).

use std::{fmt::Write as _, path::Path};

use serde::Serialize;

use super::output::table;
use crate::{
    agent::status::{self, AgentStatus, StatusError},
    datapath::{KernelMaps, MapFill},
};

/// The published status, whether the agent that wrote it still runs (a
/// stopped agent leaves its last status behind), and the maps' fill.
#[derive(Debug, Serialize)]
pub struct StatusView {
    #[serde(flatten)]
    pub status: AgentStatus,
    pub agent_running: bool,
    /// `in sync`, `late: ...`, `failing: ...` or `not synced yet`.
    pub sync_state: String,
    /// Each map's entries and capacity, when the pins could be read.
    pub maps: Option<Vec<MapFill>>,
    /// Why they could not.
    pub maps_error: Option<String>,
}

pub fn read(state_dir: &Path, pin_dir: &Path, now: u64) -> Result<StatusView, StatusError> {
    let status = status::read(state_dir)?;
    let agent_running = Path::new(&format!("/proc/{}", status.pid)).exists();
    let fill = KernelMaps::open_pinned(pin_dir)
        .map_err(|err| err.to_string())
        .and_then(|maps| maps.fill().map_err(|err| err.to_string()));
    let (maps, maps_error) = match fill {
        Ok(fill) => (Some(fill), None),
        Err(err) => (
            None,
            Some(format!(
                "cannot read the pinned maps in {}: {err}; run as root (CAP_BPF), or give --pin-dir",
                pin_dir.display()
            )),
        ),
    };
    Ok(StatusView {
        sync_state: sync_state(&status, now),
        status,
        agent_running,
        maps,
        maps_error,
    })
}

/// Whether the agent keeps the maps current: its last sync failed, or its
/// last success is older than twice the sync period (kube-proxy's health
/// timeout, past which `/healthz` answers 503 for a queued change).
pub fn sync_state(status: &AgentStatus, now: u64) -> String {
    let since_success = now.saturating_sub(status.last_success_unix);
    if status.last_sync_unix == 0 {
        return "not synced yet".to_owned();
    }
    if !status.last_sync_ok {
        return match status.last_success_unix {
            0 => "failing: no sync has succeeded yet".to_owned(),
            _ => format!("failing: the last success was {since_success}s ago"),
        };
    }
    let timeout = status.sync_period_seconds * 2;
    if status.sync_period_seconds > 0 && since_success > timeout {
        return format!(
            "late: the last success was {since_success}s ago, more than twice the {}s sync period",
            status.sync_period_seconds
        );
    }
    "in sync".to_owned()
}

/// The human rendering, `now` in seconds since the epoch.
pub fn render(view: &StatusView, now: u64) -> String {
    let status = &view.status;
    let mut out = String::new();
    let agent = if view.agent_running {
        format!("running (pid {})", status.pid)
    } else {
        format!(
            "not running (pid {} is gone): this is its last status",
            status.pid
        )
    };
    let _ = writeln!(out, "agent:      {agent}");
    let _ = writeln!(out, "source:     {}", status.source);
    let last = match (status.last_sync_unix, &status.last_sync_error) {
        (0, _) => "none yet".to_owned(),
        (at, None) => format!("succeeded {}s ago", now.saturating_sub(at)),
        (at, Some(err)) => format!("failed {}s ago: {err}", now.saturating_sub(at)),
    };
    let _ = writeln!(out, "last sync:  {last}");
    let _ = writeln!(out, "sync state: {}", view.sync_state);
    render_maps(view, &mut out);
    if status.problems.is_empty() {
        out.push_str("problems:   none\n");
        return out;
    }
    let _ = writeln!(out, "problems:   {}\n", status.problems.len());
    let rows: Vec<Vec<String>> = status
        .problems
        .iter()
        .map(|p| {
            vec![
                p.severity.clone(),
                p.code.clone(),
                p.file.clone().unwrap_or_else(|| "-".into()),
                p.object.clone(),
                p.reason.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["SEVERITY", "CODE", "FILE", "OBJECT", "REASON"],
        &rows,
    ));
    out
}

/// The maps' fill as a table, or why it is unknown.
fn render_maps(view: &StatusView, out: &mut String) {
    let Some(maps) = &view.maps else {
        let why = view.maps_error.as_deref().unwrap_or("unknown");
        let _ = writeln!(out, "maps:       {why}");
        return;
    };
    out.push_str("maps:\n\n");
    let rows: Vec<Vec<String>> = maps
        .iter()
        .map(|m| {
            let percent = if m.capacity == 0 {
                "-".to_owned()
            } else {
                format!("{:.1}%", m.entries as f64 * 100.0 / m.capacity as f64)
            };
            vec![
                m.map.to_owned(),
                m.entries.to_string(),
                m.capacity.to_string(),
                percent,
            ]
        })
        .collect();
    out.push_str(&table(&["MAP", "ENTRIES", "CAPACITY", "FILL"], &rows));
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::status::StatusProblem;

    #[test]
    fn the_table_names_each_problem_and_the_last_sync() {
        let view = StatusView {
            status: AgentStatus {
                pid: 1,
                source: "manifests:/etc/lb".into(),
                last_sync_unix: 100,
                last_sync_ok: true,
                last_success_unix: 100,
                sync_period_seconds: 30,
                last_sync_error: None,
                problems: vec![StatusProblem {
                    object: "bad.yaml (document 1)".into(),
                    file: Some("bad.yaml".into()),
                    code: "invalid-yaml".into(),
                    severity: "error".into(),
                    reason: "invalid YAML: oops".into(),
                }],
            },
            agent_running: true,
            sync_state: "in sync".into(),
            maps: Some(vec![MapFill {
                map: "frontends",
                entries: 16384,
                capacity: 65536,
            }]),
            maps_error: None,
        };
        let text = render(&view, 103);
        assert!(text.contains("sync state: in sync"), "{text}");
        assert!(
            text.contains("frontends  16384    65536     25.0%"),
            "{text}"
        );
        assert!(text.contains("last sync:  succeeded 3s ago"), "{text}");
        assert!(
            text.contains(
                "error     invalid-yaml  bad.yaml  bad.yaml (document 1)  invalid YAML: oops"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["problems"][0]["code"], "invalid-yaml");
        assert_eq!(json["agent_running"], true);
    }

    /// kube-proxy's health timeout is twice the sync period: a last success
    /// older than that is late; a failed last sync is failing whatever its
    /// age.
    #[test]
    fn the_sync_state_is_late_past_twice_the_period_and_failing_after_a_failure() {
        let status = |ok: bool, success: u64| AgentStatus {
            last_sync_unix: 1000,
            last_sync_ok: ok,
            last_success_unix: success,
            sync_period_seconds: 30,
            ..AgentStatus::default()
        };
        assert_eq!(sync_state(&status(true, 1000), 1060), "in sync");
        assert!(sync_state(&status(true, 1000), 1061).starts_with("late: "));
        assert_eq!(
            sync_state(&status(false, 990), 1000),
            "failing: the last success was 10s ago"
        );
        assert!(sync_state(&status(false, 0), 1000).contains("no sync has succeeded"));
        assert_eq!(sync_state(&AgentStatus::default(), 5), "not synced yet");
    }
}
