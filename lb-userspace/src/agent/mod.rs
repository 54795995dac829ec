//! `lb agent`: keeps the datapath's maps equal to what the manifests say.
//!
//! source (manifest directory) -> desired state (pure) -> plan (pure) ->
//! apply (ordered map writes). The datapath is pinned, so the agent can be
//! stopped, killed or upgraded while established connections keep flowing.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    datapath::{
        DatapathMaps, KernelMaps, MemoryMaps,
        loader::{Datapath, LoadOptions},
    },
    desired,
    model::{DesiredState, NodeFacts, Problem},
    plan::{self, Applied},
    source::manifests,
};

/// Everything the agent needs to run, from the command line.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub manifests: PathBuf,
    pub devices: Vec<String>,
    pub xdp_generic: bool,
    pub node: NodeFacts,
    pub cgroup: Option<PathBuf>,
    pub pin_dir: PathBuf,
    pub max_tables: u32,
    pub resync: Duration,
    pub dry_run: bool,
    /// Log each verdict from the datapath (aya-log), for debugging.
    pub bpf_log: bool,
}

/// Reads the manifests and derives the desired state. Fails (so that the
/// caller keeps the current state) when the directory itself is unreadable:
/// a missing directory must not read as "every Service was deleted".
pub fn desired_from_manifests(dir: &Path, node: &NodeFacts) -> Result<DesiredState> {
    std::fs::read_dir(dir)
        .with_context(|| format!("reading manifest directory {}", dir.display()))?;
    let set = manifests::load_dir(dir);
    let mut state = desired::compute(&set.services, &set.slices, node);
    let mut problems = set.problems;
    problems.append(&mut state.problems);
    state.problems = problems;
    Ok(state)
}

pub async fn run(config: AgentConfig) -> Result<()> {
    if config.dry_run {
        return dry_run(&config);
    }
    let mut datapath = Datapath::load(&LoadOptions {
        pin_dir: Some(config.pin_dir.clone()),
        max_tables: config.max_tables,
        bpf_log: config.bpf_log,
        ..LoadOptions::default()
    })
    .context("loading the datapath")?;
    if config.bpf_log {
        forward_bpf_logs(&mut datapath)?;
    }
    for device in &config.devices {
        let xdp = datapath
            .attach_xdp(device, config.xdp_generic)
            .with_context(|| format!("attaching XDP to {device}"))?;
        let tc = datapath
            .attach_tc_egress(device)
            .with_context(|| format!("attaching tc egress to {device}"))?;
        info!(device, xdp = ?xdp, tc_egress = ?tc, "attached to device");
    }
    if let Some(cgroup) = &config.cgroup {
        let hooks = datapath
            .attach_cgroup(cgroup)
            .with_context(|| format!("attaching socket hooks to {}", cgroup.display()))?;
        info!(cgroup = %cgroup.display(), socket_hooks = ?hooks, "attached to cgroup");
    }
    let mut maps = datapath.maps().context("opening the datapath maps")?;
    let mut applied = Applied::read(&maps).context("reading the pinned maps")?;
    info!(
        frontends = applied.frontends.len(),
        backends = applied.backends.len(),
        pin_dir = %config.pin_dir.display(),
        "datapath attached"
    );

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })?;
    watcher
        .watch(&config.manifests, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", config.manifests.display()))?;

    let mut syncer = Syncer::default();
    syncer.sync(&config, &mut maps, &mut applied);
    let mut resync = tokio::time::interval(config.resync);
    resync.tick().await;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            Some(()) = rx.recv() => {
                // Editors and `kubectl`-style tools write in bursts: settle first.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while rx.try_recv().is_ok() {}
                syncer.sync(&config, &mut maps, &mut applied);
            }
            _ = resync.tick() => syncer.sync(&config, &mut maps, &mut applied),
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    info!("stopping; the pinned datapath keeps serving established and new connections");
    Ok(())
}

/// Forwards the datapath's aya-log records into the agent's log (they reach
/// tracing through its `log` bridge) as they arrive.
fn forward_bpf_logs(datapath: &mut Datapath) -> Result<()> {
    let logger = datapath.logger(log::logger())?;
    // SAFETY: the logger owns its map fd and flushing neither closes nor
    // replaces it, as tokio's AsyncFd requires.
    let mut logger = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    }?;
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = logger.readable_mut().await else {
                break;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
    warn!("datapath debug logging is on: every packet is logged, which costs throughput");
    Ok(())
}

/// Remembers what was last reported, so a periodic resync does not repeat
/// the same warnings.
#[derive(Default)]
struct Syncer {
    reported: BTreeSet<String>,
}

impl Syncer {
    fn sync(&mut self, config: &AgentConfig, maps: &mut dyn DatapathMaps, applied: &mut Applied) {
        let started = Instant::now();
        let desired = match desired_from_manifests(&config.manifests, &config.node) {
            Ok(desired) => desired,
            Err(err) => {
                warn!("keeping the current state: {err:#}");
                return;
            }
        };
        let plan = plan::plan(&desired, applied, maps.max_tables());
        self.report(desired.problems.iter().chain(&plan.problems));
        // Applied even with nothing to write: that ends the quarantine of
        // the tables the previous plan freed, which a skipped Service may
        // be waiting for.
        match plan::apply(&plan, maps, applied) {
            Ok(()) if plan.is_empty() => {}
            Ok(()) => info!(
                frontends = desired.frontends.len(),
                changes = plan.set_frontends.len() + plan.remove_frontends.len(),
                tables = plan.write_tables.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "synced"
            ),
            Err(err) => {
                warn!("applying the plan failed, will retry: {err}");
                match Applied::reread(maps, applied) {
                    Ok(fresh) => *applied = fresh,
                    Err(err) => warn!("re-reading the maps failed: {err}"),
                }
            }
        }
    }

    fn report<'a>(&mut self, problems: impl Iterator<Item = &'a Problem>) {
        let now: BTreeSet<String> = problems.map(ToString::to_string).collect();
        for problem in now.difference(&self.reported) {
            warn!("skipped: {problem}");
        }
        self.reported = now;
    }
}

/// Prints the plan against what the pinned datapath holds (read only), or
/// against an empty one when nothing is pinned. Touches nothing.
fn dry_run(config: &AgentConfig) -> Result<()> {
    let desired = desired_from_manifests(&config.manifests, &config.node)?;
    for problem in &desired.problems {
        println!("skipped: {problem}");
    }
    let (applied, max_tables) = match KernelMaps::open_pinned(&config.pin_dir) {
        Ok(maps) => {
            println!(
                "# against the datapath pinned at {}",
                config.pin_dir.display()
            );
            (Applied::read(&maps)?, maps.max_tables())
        }
        Err(err) => {
            println!("# against an empty datapath ({err})");
            let empty = MemoryMaps::new(config.max_tables);
            (Applied::read(&empty)?, empty.max_tables())
        }
    };
    let plan = plan::plan(&desired, &applied, max_tables);
    for problem in &plan.problems {
        println!("skipped: {problem}");
    }
    if plan.is_empty() {
        println!("# nothing to do: the datapath already matches");
    }
    print!("{plan}");
    Ok(())
}

/// The node's IPv4 addresses, for NodePorts when none are given: every
/// address on every interface except loopback (kube-proxy's default).
pub fn local_ipv4_addresses() -> Result<Vec<Ipv4Addr>> {
    let mut addrs = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below; we only read it.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        bail!("getifaddrs: {}", std::io::Error::last_os_error());
    }
    let mut cursor = ifap;
    while !cursor.is_null() {
        // SAFETY: cursor walks the list getifaddrs returned.
        let entry = unsafe { &*cursor };
        if !entry.ifa_addr.is_null()
            && i32::from(unsafe { (*entry.ifa_addr).sa_family }) == libc::AF_INET
        {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
            let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            if !addr.is_loopback() {
                addrs.push(addr);
            }
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: frees the list getifaddrs allocated.
    unsafe { libc::freeifaddrs(ifap) };
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}
