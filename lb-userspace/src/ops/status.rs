//! `lb status`: what the running agent published (see `agent::status`),
//! for people (a summary and a table of problems) or scripts (`-o json`).

use std::{fmt::Write as _, path::Path};

use serde::Serialize;

use super::output::table;
use crate::agent::status::{self, AgentStatus, StatusError};

/// The published status, and whether the agent that wrote it still runs
/// (a stopped agent leaves its last status behind).
#[derive(Debug, Serialize)]
pub struct StatusView {
    #[serde(flatten)]
    pub status: AgentStatus,
    pub agent_running: bool,
}

pub fn read(state_dir: &Path) -> Result<StatusView, StatusError> {
    let status = status::read(state_dir)?;
    let agent_running = Path::new(&format!("/proc/{}", status.pid)).exists();
    Ok(StatusView {
        status,
        agent_running,
    })
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
        };
        let text = render(&view, 103);
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
}
