//! Running `lb-probe` requests and tallying which pod answered.

use std::{collections::BTreeMap, path::PathBuf, process::Command};

use anyhow::{Context, Result};

/// Where cargo puts the workspace's build output.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// A debug binary of the workspace (`lb`, `lb-probe`).
pub fn target_bin(name: &str) -> PathBuf {
    target_dir().join("debug").join(name)
}

/// The outcome of a batch of requests.
#[derive(Debug, Default)]
pub struct Tally {
    /// Answers by pod name.
    pub answers: BTreeMap<String, u32>,
    pub errors: Vec<String>,
}

impl Tally {
    pub fn pods_reached(&self) -> usize {
        self.answers.len()
    }

    pub fn total(&self) -> u32 {
        self.answers.values().sum::<u32>() + self.errors.len() as u32
    }
}

/// Runs an `lb-probe tcp|udp ... --count N` command and tallies its lines.
pub fn tally(cmd: &mut Command) -> Result<Tally> {
    let output = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let mut tally = Tally::default();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        match line.strip_prefix("error: ") {
            Some(err) => tally.errors.push(err.to_string()),
            None => *tally.answers.entry(line.to_string()).or_default() += 1,
        }
    }
    if tally.total() == 0 {
        tally.errors.push(format!(
            "lb-probe printed nothing: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(tally)
}
