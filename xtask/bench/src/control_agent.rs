//! The agent as the control-plane section needs it: the same testbed,
//! manifests, pods and agent command as [`crate::fixture::AgentUnderTest`],
//! but started here so the instant of its start is known exactly (the full
//! sync is timed from it), and with manifest changes made the way an
//! operator's tool makes them: written beside the directory, renamed into
//! place (one inotify event, one complete file).

use std::{
    fs,
    path::PathBuf,
    process::Child,
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail};
use xtask::testbed::{Testbed, pod_addr};

use crate::{
    agent_log::{SyncedLine, attached_at, synced_lines},
    fixture::{self, PODS, manifests_text, max_tables, release_bin, require},
};

/// The file the agent reads the Services from.
const MANIFEST: &str = "services.yaml";

pub struct ControlAgent {
    // Dropped first: the agent goes before the testbed it runs in.
    agent: Option<Child>,
    /// When the agent's process was started (wall clock, as its log is).
    pub started: SystemTime,
    pub bed: Testbed,
    workdir: PathBuf,
    pub services: usize,
}

impl ControlAgent {
    /// Testbed, pods, manifests of `services` Services, then the agent.
    /// Returns as soon as the agent runs: the caller times the full sync.
    pub fn start(services: usize) -> Result<ControlAgent> {
        let (lb, probe) = (release_bin("lb"), release_bin("lb-probe"));
        require(&lb)?;
        require(&probe)?;
        let mut bed = Testbed::new(PODS)?;
        let workdir = std::env::temp_dir().join(format!("{}-control", bed.prefix));
        fs::create_dir_all(workdir.join("manifests"))?;
        fs::create_dir_all(workdir.join("staging"))?;
        fs::write(
            workdir.join("manifests").join(MANIFEST),
            manifests_text(services),
        )?;
        bed.start_pod_servers(&probe)?;
        let log = fs::File::create(workdir.join("agent.log"))?;
        let mut command = bed.agent_command(&lb, &workdir.join("manifests"));
        command
            .args(["--max-tables", &max_tables(services).to_string()])
            // No periodic resync inside a measurement, and no minimum
            // interval: the change follows the full sync by less than
            // kube-proxy's 1 s, which would be measured instead of the
            // agent (kube-proxy's own figures have no minSyncPeriod either).
            .args(["--resync-seconds", "3600", "--min-sync-period", "0s"])
            .env("RUST_LOG", "info")
            .stdout(log.try_clone()?)
            .stderr(log);
        let started = SystemTime::now();
        let agent = command.spawn().context("starting lb agent")?;
        Ok(ControlAgent {
            agent: Some(agent),
            started,
            bed,
            workdir,
            services,
        })
    }

    /// The agent's `synced` lines so far.
    pub fn synced(&self) -> Vec<SyncedLine> {
        synced_lines(&fs::read_to_string(self.workdir.join("agent.log")).unwrap_or_default())
    }

    /// When the agent logged its datapath attached.
    pub fn attached(&self) -> Option<SystemTime> {
        attached_at(&fs::read_to_string(self.workdir.join("agent.log")).unwrap_or_default())
    }

    /// Each program's load time the agent logged (`program_load`).
    pub fn program_loads(&self) -> Vec<(&'static str, f64)> {
        crate::program_load::figures(
            &fs::read_to_string(self.workdir.join("agent.log")).unwrap_or_default(),
        )
    }

    /// Waits (bounded) for the agent's `count`-th `synced` line.
    pub fn wait_synced(&mut self, count: usize, limit: Duration) -> Result<SyncedLine> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.synced().into_iter().nth(count - 1) {
                return Ok(line);
            }
            if let Some(status) = self
                .agent
                .as_mut()
                .and_then(|a| a.try_wait().ok().flatten())
            {
                bail!("lb agent exited with {status}:\n{}", self.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "the agent logged no sync #{count} within {limit:?}:\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Replaces the manifest with `text` by a rename into the watched
    /// directory; the wall time of the rename.
    pub fn replace_manifest(&self, text: &str) -> Result<SystemTime> {
        let staged = self.workdir.join("staging").join(MANIFEST);
        fs::write(&staged, text)?;
        let at = SystemTime::now();
        fs::rename(&staged, self.workdir.join("manifests").join(MANIFEST))?;
        Ok(at)
    }

    /// The agent's resident memory now and at its peak, in KiB.
    pub fn memory_kib(&self) -> Result<(u64, u64)> {
        fixture::process_memory_kib(self.agent.as_ref().map(Child::id).context("no agent")?)
    }

    fn log_tail(&self) -> String {
        fixture::log_tail(&self.workdir.join("agent.log"), 20)
    }
}

impl Drop for ControlAgent {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        let _ = fs::remove_dir_all(&self.workdir);
    }
}

/// The manifests of `services` Services with the target's first pod gone
/// from its EndpointSlice (pods {1,2,3} -> {2,3}). The target's slice is
/// the file's first list of endpoints.
pub fn without_first_pod(services: usize) -> String {
    let first = format!(
        "- addresses: [{}]\n  conditions: {{ready: true}}\n",
        pod_addr(0)
    );
    manifests_text(services).replacen(&first, "", 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{expected_frontends, tests::desired_of};

    #[test]
    fn the_change_takes_exactly_the_first_pod_from_the_target() {
        for services in [1, 20] {
            let (set, state) = desired_of(&without_first_pod(services));
            assert_eq!(state.frontends.len(), expected_frontends(services));
            let target = set
                .slices
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some("target-1"))
                .expect("target slice");
            let addresses: Vec<String> = target
                .endpoints
                .iter()
                .filter_map(|e| e.address.as_deref().map(str::to_owned))
                .collect();
            assert_eq!(
                addresses,
                vec![pod_addr(1).to_string(), pod_addr(2).to_string()]
            );
            // Nothing else moved: one endpoint fewer in the whole file.
            let before = manifests_text(services).matches("- addresses:").count();
            let after = without_first_pod(services).matches("- addresses:").count();
            assert_eq!(before, after + 1);
        }
    }
}
