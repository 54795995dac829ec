//! The test API server (`xtask/k8s-apiserver/`): a real `k8s.io/apiserver`
//! with a real etcd, built once into a cache by `cargo xtask setup`, and
//! started by tests on free loopback ports in a directory of their own.
//!
//! It has no controllers and no ClusterIP allocation: tests create
//! Services (with their clusterIP), EndpointSlices and Nodes themselves.

use std::{
    fs,
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context, Result, bail};

/// Where build.sh puts its binaries (and its up-to-date stamp).
pub const PREFIX: &str = "/var/cache/k8s-apiserver";

/// The scripts and the server's source, in the repository.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s-apiserver")
}

pub fn bin_dir() -> PathBuf {
    Path::new(PREFIX).join("bin")
}

/// `cargo xtask setup`'s step: builds the API server unless build.sh's
/// stamp says this very main.go and build.sh built it (then it is silent).
pub fn build() -> Result<()> {
    if is_up_to_date()? {
        return Ok(());
    }
    if !crate::setup::is_root() {
        bail!("the test API server is not built in {PREFIX}: run `cargo xtask setup` as root");
    }
    crate::setup::step(&format!(
        "building the test API server and etcd into {PREFIX} from Debian sid's Go packages \
         (about 7 minutes and 2.3 GB of scratch disk, once; see xtask/k8s-apiserver/README.md)"
    ));
    crate::setup::run(Command::new(scripts_dir().join("build.sh")).arg(PREFIX))
}

/// build.sh's own check: the binaries exist and the stamp is the hash of
/// main.go and build.sh.
fn is_up_to_date() -> Result<bool> {
    let bin = bin_dir();
    if !bin.join("miniapiserver").exists() || !bin.join("etcd").exists() {
        return Ok(false);
    }
    let stamp = fs::read_to_string(bin.join(".stamp")).unwrap_or_default();
    let dir = scripts_dir();
    let hash = Command::new("sh")
        .arg("-c")
        .arg(r#"cat "$1/main.go" "$1/build.sh" | sha256sum | cut -c1-16"#)
        .args(["sh", &dir.to_string_lossy()])
        .output()
        .context("hashing xtask/k8s-apiserver/{main.go,build.sh} (sha256sum)")?;
    Ok(hash.status.success() && String::from_utf8_lossy(&hash.stdout).trim() == stamp.trim())
}

/// A running API server and its etcd. Dropping it stops both and removes
/// its directory (data, logs, kubeconfig).
pub struct ApiServer {
    rundir: PathBuf,
    api_port: u16,
    etcd_port: u16,
    /// The network namespace both run in (`nsenter --net=`), if not ours.
    netns: Option<PathBuf>,
    running: bool,
}

impl ApiServer {
    /// Starts etcd and the API server on free loopback ports of this
    /// network namespace.
    pub fn start() -> Result<ApiServer> {
        ApiServer::start_where(None)
    }

    /// Starts them inside the network namespace at `netns` (a path such as
    /// /run/netns/NAME), on that namespace's loopback: for an agent that
    /// runs there.
    pub fn start_in_netns(netns: &Path) -> Result<ApiServer> {
        ApiServer::start_where(Some(netns.to_owned()))
    }

    fn start_where(netns: Option<PathBuf>) -> Result<ApiServer> {
        if !bin_dir().join("miniapiserver").exists() {
            bail!(
                "no test API server in {}: run `cargo xtask setup` (it builds it)",
                bin_dir().display()
            );
        }
        let rundir = tempdir("lb-apiserver")?;
        let mut last_error = None;
        // Free ports are only free until someone takes them: try again on
        // others if a process could not bind.
        for _ in 0..3 {
            let (api_port, etcd_port) = free_ports(netns.as_deref())?;
            let mut server = ApiServer {
                rundir: rundir.clone(),
                api_port,
                etcd_port,
                netns: netns.clone(),
                running: false,
            };
            match server.run_start() {
                Ok(()) => return Ok(server),
                Err(err) => {
                    server.stop();
                    let _ = fs::remove_dir_all(rundir.join("etcd"));
                    last_error = Some(err);
                }
            }
        }
        let _ = fs::remove_dir_all(&rundir);
        Err(last_error.expect("three attempts"))
    }

    fn run_start(&mut self) -> Result<()> {
        let out = self
            .command(&scripts_dir().join("start.sh"))
            .arg(&self.rundir)
            .arg(self.api_port.to_string())
            .arg(self.etcd_port.to_string())
            .arg(bin_dir())
            .output()
            .context("running xtask/k8s-apiserver/start.sh")?;
        // Whatever start.sh started is in RUNDIR/pids, even on failure.
        self.running = true;
        check(&out, "start.sh")
    }

    /// A command run where the server runs (its network namespace).
    fn command(&self, program: &Path) -> Command {
        match &self.netns {
            Some(netns) => {
                let mut cmd = Command::new("nsenter");
                cmd.arg(format!("--net={}", netns.display())).arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.rundir.join("kubeconfig")
    }

    pub fn rundir(&self) -> &Path {
        &self.rundir
    }

    /// Kills the API server and etcd (SIGKILL); the data stays.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let _ = self
            .command(&scripts_dir().join("stop.sh"))
            .arg(&self.rundir)
            .output();
        self.running = false;
    }

    /// Starts them again after [`ApiServer::stop`], on the same data and
    /// ports: the watch cache starts over from etcd.
    pub fn start_again(&mut self) -> Result<()> {
        self.run_start()
    }

    /// Stops and starts on the same data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.start_again()
    }

    /// Compacts etcd at its current revision: every older resourceVersion
    /// is gone, so a watch resumed from one gets 410 Gone.
    pub fn compact(&self) -> Result<u64> {
        let revision = self.etcd_revision()?;
        let out = self
            .etcdctl()
            .args(["compact", &revision.to_string()])
            .output()?;
        check(&out, "etcdctl compact")?;
        Ok(revision)
    }

    /// The etcd keys under `prefix` (e.g. /registry/services/).
    pub fn etcd_keys(&self, prefix: &str) -> Result<Vec<String>> {
        let out = self
            .etcdctl()
            .args(["get", "--prefix", "--keys-only", prefix])
            .output()?;
        check(&out, "etcdctl get")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// Deletes a key straight from etcd: with [`ApiServer::stop_api_only`],
    /// a change made while the API server is down.
    pub fn etcd_delete(&self, key: &str) -> Result<()> {
        let out = self.etcdctl().args(["del", key]).output()?;
        check(&out, "etcdctl del")
    }

    fn etcd_revision(&self) -> Result<u64> {
        let out = self
            .etcdctl()
            .args(["endpoint", "status", "-w", "json"])
            .output()?;
        check(&out, "etcdctl endpoint status")?;
        let status: serde_json::Value = serde_json::from_slice(&out.stdout)
            .context("etcdctl endpoint status printed no JSON")?;
        status[0]["Status"]["header"]["revision"]
            .as_u64()
            .context("no revision in etcdctl endpoint status")
    }

    fn etcdctl(&self) -> Command {
        let mut cmd = self.command(&bin_dir().join("etcdctl"));
        cmd.arg("--endpoints")
            .arg(format!("127.0.0.1:{}", self.etcd_port));
        cmd
    }

    /// Kills only the API server, leaving etcd up (the API server is the
    /// last pid start.sh records): the cluster is "down" for clients while
    /// a test still edits etcd.
    pub fn stop_api_only(&mut self) -> Result<()> {
        let pids = fs::read_to_string(self.rundir.join("pids"))?;
        let api = pids.lines().last().context("start.sh recorded no pids")?;
        let status = Command::new("kill").args(["-9", api]).status()?;
        if !status.success() {
            bail!("kill -9 {api} failed");
        }
        Ok(())
    }

    /// A client of this server (plain HTTP, no credentials: the server
    /// lets everyone in).
    #[cfg(feature = "kube")]
    pub fn client(&self) -> Result<kube::Client> {
        let config = kube::Config::new(self.url().parse()?);
        Ok(kube::Client::try_from(config)?)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.rundir);
    }
}

fn check(out: &Output, what: &str) -> Result<()> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn tempdir(prefix: &str) -> Result<PathBuf> {
    for attempt in 0..100u32 {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{attempt}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err).context(format!("creating {}", dir.display())),
        }
    }
    bail!(
        "no free directory name for {prefix} in {}",
        std::env::temp_dir().display()
    )
}

/// An API port, and an etcd client port whose next port (etcd's peer
/// port) is free too. Ports are probed in our namespace: a new network
/// namespace has all of them free.
fn free_ports(netns: Option<&Path>) -> Result<(u16, u16)> {
    if netns.is_some() {
        // Another namespace's ports cannot be probed from here; the
        // scripts' defaults are free in a namespace made for a test.
        return Ok((18080, 12379));
    }
    let api = free_port()?;
    for _ in 0..50 {
        let etcd = free_port()?;
        if etcd != u16::MAX
            && etcd + 1 != api
            && etcd != api
            && TcpListener::bind((Ipv4Addr::LOCALHOST, etcd + 1)).is_ok()
        {
            return Ok((api, etcd));
        }
    }
    bail!("no two free adjacent loopback ports for etcd")
}

fn free_port() -> Result<u16> {
    Ok(crate::scrape::free_loopback_address()?.port())
}
