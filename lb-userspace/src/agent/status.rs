//! What the running agent publishes for `lb status`: its source, its last
//! sync and every current problem.
//!
//! The pin directory is bpffs, which holds no regular files, so the status
//! is a JSON file in a state directory (`--state-dir`, default `/run/lb`),
//! replaced whole by a rename at each sync: a reader never sees half of it.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{model::Problem, source::Snapshot};

/// The file's name in the state directory.
pub const STATUS_FILE: &str = "status.json";

/// The status file's content.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// The agent's process, to tell a stale file from a live one.
    pub pid: u32,
    /// Where the objects come from: `manifests:<dir>` or `cluster:<API server URL>`.
    pub source: String,
    /// When the last sync ended (seconds since the Unix epoch); none yet: 0.
    pub last_sync_unix: u64,
    /// Whether the last sync read the source and applied its plan.
    pub last_sync_ok: bool,
    /// When a sync last succeeded (seconds since the epoch); none yet: 0.
    #[serde(default)]
    pub last_success_unix: u64,
    /// The longest the agent goes between syncs (`--sync-period`), in
    /// seconds: a last success older than twice this is late (kube-proxy's
    /// health timeout).
    #[serde(default)]
    pub sync_period_seconds: u64,
    /// Why it did not, when it did not.
    pub last_sync_error: Option<String>,
    /// Every current problem, the source's first.
    pub problems: Vec<StatusProblem>,
}

/// A problem as `lb status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusProblem {
    pub object: String,
    /// The manifest file it came from, when known.
    pub file: Option<String>,
    pub code: String,
    pub severity: String,
    pub reason: String,
}

impl StatusProblem {
    pub fn of(problem: &Problem, files: &Snapshot) -> StatusProblem {
        StatusProblem {
            object: problem.object.clone(),
            file: files.file_of(&problem.object).map(str::to_owned),
            code: problem.code.as_str().to_owned(),
            severity: problem.severity.as_str().to_owned(),
            reason: problem.reason.clone(),
        }
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn status_path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATUS_FILE)
}

/// Writes the status atomically: a temporary file in the same directory,
/// renamed over the old one.
pub fn publish(state_dir: &Path, status: &AgentStatus) -> std::io::Result<()> {
    fs::create_dir_all(state_dir)?;
    let temporary = state_dir.join(format!(".{STATUS_FILE}.{}", std::process::id()));
    let mut file = fs::File::create(&temporary)?;
    serde_json::to_writer_pretty(&mut file, status)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    fs::rename(&temporary, status_path(state_dir))
}

/// Reads what an agent published. (The errors name their cause in their
/// message, not as a `source`, so that `{:#}` does not say it twice.)
pub fn read(state_dir: &Path) -> Result<AgentStatus, StatusError> {
    let path = status_path(state_dir);
    let text = fs::read_to_string(&path).map_err(|error| StatusError::Unreadable {
        path: path.clone(),
        error,
    })?;
    serde_json::from_str(&text).map_err(|error| StatusError::Invalid { path, error })
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(
        "cannot read {}: {error}; is `lb agent` running with --state-dir {}?",
        path.display(),
        path.parent().map(Path::display).map(|d| d.to_string()).unwrap_or_default()
    )]
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} is not an lb status file ({error}); was it written by another lb version?", path.display())]
    Invalid {
        path: PathBuf,
        error: serde_json::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_status_reads_back_and_replaces_the_previous_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("run-lb");
        let mut status = AgentStatus {
            pid: 7,
            source: "manifests:/etc/lb".into(),
            last_sync_unix: 1,
            last_sync_ok: true,
            ..AgentStatus::default()
        };
        publish(&state, &status).expect("publish");
        status.problems.push(StatusProblem {
            object: "web.yaml (document 1)".into(),
            file: Some("web.yaml".into()),
            code: "invalid-yaml".into(),
            severity: "error".into(),
            reason: "invalid YAML".into(),
        });
        publish(&state, &status).expect("publish again");
        assert_eq!(read(&state).expect("read"), status);
        let names: Vec<_> = fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![STATUS_FILE], "no temporary file is left");
    }

    #[test]
    fn a_missing_status_says_what_to_check() {
        let err = read(Path::new("/nonexistent/lb-state")).expect_err("nothing there");
        assert!(err.to_string().contains("--state-dir"), "{err}");
    }
}
