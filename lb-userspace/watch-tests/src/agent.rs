//! The agent under test: the real `lb agent` in cluster mode, on a pin
//! directory of its own, read back with `lb service list`.

use std::{
    collections::BTreeMap,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use xtask::{scrape::free_loopback_address, traffic::target_bin};

use crate::objects::NODE;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A running `lb agent`. Dropping it kills it and removes its pins and its
/// directory (the log is printed first if the test is failing).
pub struct Agent {
    pub lb: PathBuf,
    pub pin_dir: PathBuf,
    pub workdir: PathBuf,
    /// Where its `/healthz` and `/livez`, and its `/metrics`, answer.
    pub healthz: SocketAddr,
    pub metrics: SocketAddr,
    child: Option<Child>,
    args: Vec<String>,
}

impl Agent {
    /// Starts `lb agent --kubeconfig KUBECONFIG --node-name node-a` with
    /// more `args`, no device and no cgroup (nothing is attached: only the
    /// maps matter here).
    pub fn start(kubeconfig: &Path, args: &[&str]) -> Result<Agent> {
        let lb = target_bin("lb");
        if !lb.exists() {
            bail!(
                "{} is missing: run `cargo build --bins` first",
                lb.display()
            );
        }
        let name = format!(
            "lbw{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let workdir = std::env::temp_dir().join(&name);
        fs::create_dir_all(&workdir)?;
        // Free ports: parallel agents never fight over 10256 and 10249.
        let healthz = free_loopback_address()?;
        let metrics = free_loopback_address()?;
        let mut all: Vec<String> = vec![
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--node-name".into(),
            NODE.into(),
            "--metrics-bind-address".into(),
            metrics.to_string(),
            "--healthz-bind-address".into(),
            healthz.to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let mut agent = Agent {
            lb,
            pin_dir: Path::new("/sys/fs/bpf").join(&name),
            workdir,
            healthz,
            metrics,
            child: None,
            args: all,
        };
        agent.spawn()?;
        Ok(agent)
    }

    /// Starts the agent process (again, after [`Agent::kill`]) on the same
    /// pins, appending to the same log.
    pub fn spawn(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(&self.lb)
            .arg("agent")
            .args(&self.args)
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("--state-dir")
            .arg(self.workdir.join("state"))
            .env("RUST_LOG", "info")
            .env_remove("NODE_NAME")
            .env_remove("LB_DEVICES")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting lb agent")?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: the pinned maps stay, as after a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the agent: its connections
    /// stay open but it reads nothing meanwhile.
    pub fn signal(&self, signal: libc::c_int) -> Result<()> {
        let pid = self
            .child
            .as_ref()
            .context("the agent is not running")?
            .id();
        // SAFETY: plain syscall on our own child.
        if unsafe { libc::kill(pid as i32, signal) } != 0 {
            bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Fails if the agent exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!("lb agent exited with {status}:\n{}", self.log());
        }
        Ok(())
    }

    pub fn log_path(&self) -> PathBuf {
        self.workdir.join("agent.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Log lines containing `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// What the pinned maps serve: `namespace/name:port` -> its frontends
    /// (`address scope`) and each one's backends, from `lb service list`.
    /// No pins yet reads as empty.
    pub fn served(&mut self) -> Result<Served> {
        self.check_running()?;
        if !self.pin_dir.exists() {
            return Ok(Served::default());
        }
        let out = Command::new(&self.lb)
            .args(["service", "list", "-o", "json", "--pin-dir"])
            .arg(&self.pin_dir)
            .output()?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("no lb datapath pinned") || err.contains("no pinned map") {
                return Ok(Served::default());
            }
            bail!("lb service list: {err}");
        }
        let list: Vec<Value> = serde_json::from_slice(&out.stdout)?;
        let mut served = Served::default();
        for service in list {
            let name = service["service"].as_str().unwrap_or_default().to_owned();
            for frontend in service["frontends"].as_array().into_iter().flatten() {
                let mut backends: Vec<String> = frontend["backends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|b| b["address"].as_str().map(str::to_owned))
                    .collect();
                backends.sort();
                let key = format!(
                    "{} {}",
                    frontend["address"].as_str().unwrap_or_default(),
                    frontend["scope"].as_str().unwrap_or_default()
                );
                served
                    .0
                    .entry(name.clone())
                    .or_default()
                    .insert(key, backends);
            }
        }
        Ok(served)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.signal(libc::SIGCONT);
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- agent log ({}) ---\n{}",
                self.pin_dir.display(),
                self.log()
            );
        }
        let _ = Command::new(&self.lb)
            .arg("cleanup")
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .output();
        let _ = fs::remove_dir_all(&self.pin_dir);
        let _ = fs::remove_dir_all(&self.workdir);
    }
}

/// Service port -> frontend (`address scope`) -> sorted backend addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Served(pub BTreeMap<String, BTreeMap<String, Vec<String>>>);

impl Served {
    pub fn has(&self, service: &str) -> bool {
        self.0.contains_key(service)
    }

    /// The backends of a Service port's internal frontend at `address`
    /// (`ip:port`, e.g. its ClusterIP).
    pub fn backends(&self, service: &str, address: &str) -> Option<&Vec<String>> {
        self.0.get(service)?.get(&format!("{address} internal"))
    }

    pub fn frontends(&self, service: &str) -> Vec<&str> {
        self.0
            .get(service)
            .map(|f| f.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }
}
