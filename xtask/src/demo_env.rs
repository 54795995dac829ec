//! The running environment the demo and the end-to-end tests share: a
//! testbed, pod servers, manifests and the agent, with the clients that
//! talk to it.

use std::{
    fs,
    io::{BufRead, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    demo::{FRONTENDS, Frontend, Origin, PODS},
    manifests,
    testbed::Testbed,
    traffic::{Tally, tally, target_bin},
};

/// The testbed with pod servers and the agent running on the demo manifests.
pub struct Env {
    pub bed: Testbed,
    pub lb: PathBuf,
    pub probe: PathBuf,
    pub workdir: PathBuf,
    /// More `lb agent` flags than the testbed's own.
    agent_args: Vec<String>,
    agent: Option<Child>,
}

impl Env {
    /// Builds the topology, starts the pods and the agent with all pods as
    /// endpoints, and waits until the datapath answers.
    pub fn start() -> Result<Env> {
        Env::start_with(|dir| manifests::write_demo(dir, &[0, 1, 2]), &[])
    }

    /// [`Env::start`] with other manifests (`write` fills the directory)
    /// and more agent flags. The agent is ready when the NodePort
    /// 198.51.100.1:30080 answers, so the manifests must serve it.
    pub fn start_with(write: impl FnOnce(&Path) -> Result<()>, agent_args: &[&str]) -> Result<Env> {
        Env::start_on(|| Testbed::new(PODS), write, agent_args)
    }

    /// [`Env::start_with`] on the testbed `bed` builds (a second node, say).
    pub fn start_on(
        bed: impl FnOnce() -> Result<Testbed>,
        write: impl FnOnce(&Path) -> Result<()>,
        agent_args: &[&str],
    ) -> Result<Env> {
        let (lb, probe) = (target_bin("lb"), target_bin("lb-probe"));
        for bin in [&lb, &probe] {
            if !bin.exists() {
                bail!(
                    "{} is missing: run `cargo build --bins` first",
                    bin.display()
                );
            }
        }
        let mut bed = bed()?;
        let workdir = std::env::temp_dir().join(&bed.prefix);
        fs::create_dir_all(workdir.join("manifests"))?;
        write(&workdir.join("manifests"))?;
        bed.start_pod_servers(&probe)?;
        let mut env = Env {
            bed,
            lb,
            probe,
            workdir,
            agent_args: agent_args.iter().map(|a| a.to_string()).collect(),
            agent: None,
        };
        env.start_agent()?;
        Ok(env)
    }

    pub fn manifests(&self) -> PathBuf {
        self.workdir.join("manifests")
    }

    pub fn agent_log(&self) -> PathBuf {
        self.workdir.join("agent.log")
    }

    /// The agent's `--state-dir` (its status.json, for `lb status`).
    pub fn state_dir(&self) -> PathBuf {
        self.workdir.join("state")
    }

    /// The running agent's process id (nsenter execs it, keeping the pid).
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// Starts the agent and waits (at most 20 s) until the NodePort answers.
    pub fn start_agent(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.agent_log())?;
        let child = self
            .bed
            .agent_command(&self.lb, &self.manifests())
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(&self.agent_args)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting lb agent")?;
        self.agent = Some(child);
        let nodeport = FRONTENDS[2];
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .agent
                .as_mut()
                .and_then(|a| a.try_wait().ok().flatten())
            {
                bail!("lb agent exited with {status}:\n{}", self.agent_log_text());
            }
            if self.request(&nodeport, 1)?.errors.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the datapath did not answer within 20 s:\n{}",
                    self.agent_log_text()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILLs the agent: the pinned datapath keeps running without it.
    pub fn kill_agent(&mut self) -> Result<()> {
        if let Some(mut agent) = self.agent.take() {
            agent.kill()?;
            agent.wait()?;
        }
        Ok(())
    }

    pub fn agent_log_text(&self) -> String {
        fs::read_to_string(self.agent_log()).unwrap_or_default()
    }

    /// How many packets the datapath counted under the reason `name`
    /// (`lb stats -o json` on the agent's pins; 0 when not listed).
    pub fn reason_count(&self, name: &str) -> Result<u64> {
        let out = Command::new(&self.lb)
            .args(["stats", "-o", "json", "--pin-dir"])
            .arg(&self.bed.pin_dir)
            .output()
            .context("running lb stats")?;
        let stats: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("lb stats -o json")?;
        let reasons = stats["reasons"]
            .as_array()
            .context("lb stats: no reasons")?;
        Ok(reasons
            .iter()
            .find(|r| r["reason"] == name)
            .and_then(|r| r["count"].as_u64())
            .unwrap_or(0))
    }

    /// `count` requests to a frontend from its origin.
    pub fn request(&self, frontend: &Frontend, count: u32) -> Result<Tally> {
        let mut cmd = self.probe_from(frontend.origin);
        cmd.args(["--timeout-ms", "1000"]);
        cmd.arg(if frontend.udp { "udp" } else { "tcp" })
            .arg(frontend.addr);
        cmd.args(["--count", &count.to_string()]);
        tally(&mut cmd)
    }

    pub fn probe_from(&self, origin: Origin) -> Command {
        match origin {
            Origin::Client => self.bed.from_client(&self.probe),
            Origin::Pod(i) => self.bed.from_pod(&self.probe, i),
        }
    }

    /// Rewrites the EndpointSlices to list only `pods`.
    pub fn set_endpoints(&self, pods: &[usize]) -> Result<()> {
        manifests::write_slices(&self.manifests(), pods)
    }

    /// Rewrites the EndpointSlices to list `pods` ready and `draining`
    /// serving and terminating (pods shutting down), without waiting.
    pub fn set_endpoints_draining(&self, pods: &[usize], draining: &[usize]) -> Result<()> {
        manifests::write_slices_draining(&self.manifests(), pods, draining)
    }

    /// Rewrites the EndpointSlices to list only `pods` (not none) and waits,
    /// at most 10 s, until the agent has applied them: every port of the
    /// demo Services lists exactly those pods as backends in the pinned
    /// maps. Tests assert what the datapath does once a change is applied;
    /// how fast it applies is the bench's to measure.
    pub fn set_endpoints_applied(&self, pods: &[usize]) -> Result<()> {
        self.set_endpoints_draining_applied(pods, &[])
    }

    /// [`Env::set_endpoints_draining`], then waits as
    /// [`Env::set_endpoints_applied`] until the frontends select only
    /// `pods` (the draining ones are listed, chosen by none).
    pub fn set_endpoints_draining_applied(&self, pods: &[usize], draining: &[usize]) -> Result<()> {
        self.set_endpoints_draining(pods, draining)?;
        let want: std::collections::BTreeSet<String> = pods
            .iter()
            .map(|i| crate::testbed::pod_addr(*i).to_string())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.demo_backends()?.iter().all(|set| *set == want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the agent did not apply endpoints {pods:?} within 10 s:\n{}",
                    self.agent_log_text()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The backend addresses of each frontend of the demo Services, from
    /// `lb service list` on the pinned maps.
    fn demo_backends(&self) -> Result<Vec<std::collections::BTreeSet<String>>> {
        let out = Command::new(&self.lb)
            .args(["service", "list", "-o", "json", "--pin-dir"])
            .arg(&self.bed.pin_dir)
            .output()
            .context("running lb service list")?;
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
        let services = listed
            .as_array()
            .context("lb service list -o json: a list")?;
        let demo = |s: &&serde_json::Value| {
            manifests::SERVICES
                .iter()
                .any(|(name, _)| s["name"] == *name)
        };
        Ok(services
            .iter()
            .filter(demo)
            .flat_map(|s| s["frontends"].as_array().cloned().unwrap_or_default())
            .map(|frontend| {
                frontend["backends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    // `ip:port`: the pod is the address.
                    .filter_map(|b| b["address"].as_str()?.split(':').next().map(str::to_owned))
                    .collect()
            })
            .collect())
    }

    /// Starts a long-lived `lb-probe chat` connection (stdin/stdout piped);
    /// it is killed with the testbed.
    pub fn chat(&mut self, origin: Origin, addr: &str) -> Result<Child> {
        let mut cmd = self.probe_from(origin);
        cmd.args(["chat", addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        cmd.spawn().context("starting lb-probe chat")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.kill_agent();
        let _ = fs::remove_dir_all(&self.workdir);
    }
}

/// A held connection: send a line, read which pod answered.
pub struct Chat {
    child: Child,
    stdout: BufReader<ChildStdout>,
    pub peer: String,
    /// The socket's cookie (the socket hooks hash it to pick a backend);
    /// `None` for a UDP chat, whose probe does not print it.
    pub cookie: Option<u64>,
}

impl Chat {
    pub fn open(env: &mut Env, origin: Origin, addr: &str) -> Chat {
        let mut child = env.chat(origin, addr).expect("chat");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = |prefix: &str| {
            let mut text = String::new();
            stdout.read_line(&mut text).unwrap();
            text.trim()
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("{prefix:?} expected, got {text:?}"))
                .to_string()
        };
        let peer = line("peer ");
        let cookie = Some(line("cookie ").parse().unwrap());
        Chat {
            child,
            stdout,
            peer,
            cookie,
        }
    }

    /// A connected UDP client (`lb-probe udp-chat`): it prints its peer
    /// (getpeername) first; an answer is `reconnected POD` once its socket
    /// was aborted and it connected again.
    pub fn open_udp(env: &Env, origin: Origin, addr: &str) -> Chat {
        let mut cmd = env.probe_from(origin);
        cmd.args(["udp-chat", addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("lb-probe udp-chat");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut text = String::new();
        stdout.read_line(&mut text).unwrap();
        let peer = text
            .trim()
            .strip_prefix("peer ")
            .unwrap_or_else(|| panic!("\"peer \" expected, got {text:?}"))
            .to_string();
        Chat {
            child,
            stdout,
            peer,
            cookie: None,
        }
    }

    pub fn ask(&mut self) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "ping").unwrap();
        stdin.flush().unwrap();
        let mut answer = String::new();
        // lb-probe bounds each exchange by its own timeout and prints an
        // `error:` line, so this read cannot hang.
        self.stdout.read_line(&mut answer).unwrap();
        answer.trim().to_string()
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One environment at a time within a test process: they are cheap, but
/// agents and probes share two cores, and timing assertions ("within a
/// second") should not compete with a neighbour's start-up.
static EXCLUSIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// For tests: a started environment, held exclusively (see [`EXCLUSIVE`]).
/// Needs root, as CI has.
pub fn exclusive_env() -> (std::sync::MutexGuard<'static, ()>, Env) {
    exclusive_env_with(|dir| manifests::write_demo(dir, &[0, 1, 2]), &[])
}

/// [`exclusive_env`] over [`Env::start_with`].
pub fn exclusive_env_with(
    write: impl FnOnce(&Path) -> Result<()>,
    agent_args: &[&str],
) -> (std::sync::MutexGuard<'static, ()>, Env) {
    exclusive_env_on(|| Testbed::new(PODS), write, agent_args)
}

/// [`exclusive_env`] over [`Env::start_on`].
pub fn exclusive_env_on(
    bed: impl FnOnce() -> Result<Testbed>,
    write: impl FnOnce(&Path) -> Result<()>,
    agent_args: &[&str],
) -> (std::sync::MutexGuard<'static, ()>, Env) {
    let guard = EXCLUSIVE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "end-to-end tests need root (namespaces, BPF)"
    );
    let env = Env::start_on(bed, write, agent_args).expect("starting the testbed and agent");
    (guard, env)
}
