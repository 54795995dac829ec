//! `cargo xtask demo`, and the running environment the end-to-end tests
//! share with it: a testbed, pod servers, the demo manifests and the agent.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    manifests,
    testbed::{NODE_ADDR, Testbed},
    traffic::{Tally, tally, target_bin},
};

/// Where a request is sent from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The external client, through the node's external device (XDP).
    Client,
    /// A pod on the node, through the socket hooks.
    Pod(usize),
}

#[derive(Clone, Copy, Debug)]
pub struct Frontend {
    pub label: &'static str,
    pub origin: Origin,
    pub udp: bool,
    pub addr: &'static str,
}

/// Every frontend of the demo manifests, from where users would use it.
pub const FRONTENDS: &[Frontend] = &[
    Frontend {
        label: "ClusterIP      web:http",
        origin: Origin::Pod(0),
        udp: false,
        addr: "192.0.2.10:80",
    },
    Frontend {
        label: "ClusterIP      web:dns",
        origin: Origin::Pod(0),
        udp: true,
        addr: "192.0.2.10:53",
    },
    Frontend {
        label: "NodePort       web-nodeport:http",
        origin: Origin::Client,
        udp: false,
        addr: "198.51.100.1:30080",
    },
    Frontend {
        label: "NodePort       web-nodeport:dns",
        origin: Origin::Client,
        udp: true,
        addr: "198.51.100.1:30053",
    },
    Frontend {
        label: "LoadBalancer   web-lb:http",
        origin: Origin::Client,
        udp: false,
        addr: "192.0.2.100:80",
    },
    Frontend {
        label: "externalIP     web:http",
        origin: Origin::Client,
        udp: false,
        addr: "192.0.2.200:80",
    },
    Frontend {
        label: "NodePort       (from a pod)",
        origin: Origin::Pod(1),
        udp: false,
        addr: "198.51.100.1:30080",
    },
    Frontend {
        label: "LoadBalancer   (from a pod)",
        origin: Origin::Pod(1),
        udp: false,
        addr: "192.0.2.100:80",
    },
];

pub const PODS: usize = 3;

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
        let (lb, probe) = (target_bin("lb"), target_bin("lb-probe"));
        for bin in [&lb, &probe] {
            if !bin.exists() {
                bail!(
                    "{} is missing: run `cargo build --bins` first",
                    bin.display()
                );
            }
        }
        let mut bed = Testbed::new(PODS)?;
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
    /// The socket's cookie (the socket hooks hash it to pick a backend).
    pub cookie: u64,
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
        let cookie = line("cookie ").parse().unwrap();
        Chat {
            child,
            stdout,
            peer,
            cookie,
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
    let guard = EXCLUSIVE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "end-to-end tests need root (namespaces, BPF)"
    );
    let env = Env::start_with(write, agent_args).expect("starting the testbed and agent");
    (guard, env)
}

pub fn demo() -> Result<()> {
    println!("Building a node with three pods and an external client in network namespaces...");
    let env = Env::start()?;
    println!(
        "Agent running on the node (manifests: deploy/examples/demo), XDP and tc on ext0, socket hooks on {}.",
        env.bed.cgroup.display()
    );
    println!(
        "Node address {NODE_ADDR}; pods pod-1..3 at 203.0.113.11-13 serve TCP 8080 and UDP 5353.\n"
    );
    let mut failed = Vec::new();
    round(&env, "All three pods are endpoints", &mut failed, 2)?;

    println!("Removing pod-3 from the EndpointSlices...");
    env.set_endpoints(&[0, 1])?;
    thread::sleep(Duration::from_secs(1));
    let after = round(&env, "pod-3 removed", &mut failed, 2)?;
    for tally in &after {
        if tally.answers.contains_key("pod-3") {
            failed.push("pod-3 still answered after its removal".to_string());
        }
    }
    if !failed.is_empty() {
        bail!(
            "demo failed:\n  {}\nagent log:\n{}",
            failed.join("\n  "),
            env.agent_log_text()
        );
    }
    println!(
        "Demo passed: every frontend spread over the pods, and traffic moved off pod-3 when it left."
    );
    Ok(())
}

/// One request round over every frontend, printed as a table.
fn round(env: &Env, title: &str, failed: &mut Vec<String>, min_pods: usize) -> Result<Vec<Tally>> {
    const COUNT: u32 = 30;
    let mut table = format!("{title}: {COUNT} requests per frontend\n");
    writeln!(
        table,
        "  {:<34} {:<24} {:>7} {:>7} {:>7} {:>7}",
        "frontend", "address", "pod-1", "pod-2", "pod-3", "failed"
    )?;
    let mut tallies = Vec::new();
    for frontend in FRONTENDS {
        let tally = env.request(frontend, COUNT)?;
        let proto = if frontend.udp { "udp" } else { "tcp" };
        let count = |pod: &str| tally.answers.get(pod).copied().unwrap_or(0);
        writeln!(
            table,
            "  {:<34} {:<24} {:>7} {:>7} {:>7} {:>7}",
            frontend.label,
            format!("{}/{proto}", frontend.addr),
            count("pod-1"),
            count("pod-2"),
            count("pod-3"),
            tally.errors.len()
        )?;
        if !tally.errors.is_empty() {
            failed.push(format!(
                "{} ({}): {} failed, first: {}",
                frontend.label,
                frontend.addr,
                tally.errors.len(),
                tally.errors[0]
            ));
        }
        if tally.pods_reached() < min_pods {
            failed.push(format!(
                "{} reached {} pod(s), fewer than {min_pods}",
                frontend.label,
                tally.pods_reached()
            ));
        }
        tallies.push(tally);
    }
    println!("{table}");
    Ok(tallies)
}
