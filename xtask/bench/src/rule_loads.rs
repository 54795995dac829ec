//! How long kube-proxy's own rule sets take to load, as one transaction
//! each (`iptables-legacy-restore`, `nft -f`), at a given Service count: the
//! control-plane figure the agent's full sync is compared with.
//!
//! iptables' legacy backend, as kube-proxy's iptables mode runs on nodes
//! whose rules are legacy ones (its image's `iptables-wrapper` picks the
//! backend already in use): it loads kube-proxy's rules for 10,000
//! Services x 10 endpoints in about 16 s here, where `iptables-nft-restore`
//! ran past 15 minutes, and it evaluates each rule faster too, so it is the
//! harder of the two to beat (the issue's own baseline, "iptables-restore
//! of the same rules: 11 s", is its figure).
//!
//! Every load runs inside a network namespace made for it, so the
//! machine's own netfilter tables are never touched, and the namespace is
//! removed when the guard drops, also on failure.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    kube_proxy_changes::{iptables_partial, nft_partial},
    kube_proxy_rules::{ServiceShape, iptables_restore, nft_script},
};

/// The cluster CIDR the rule sets' local-traffic detector uses.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";

/// A network namespace that exists as long as this value.
pub struct ScratchNetns {
    name: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl ScratchNetns {
    pub fn new() -> Result<ScratchNetns> {
        let name = format!(
            "lbb{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let status = Command::new("ip").args(["netns", "add", &name]).status()?;
        if !status.success() {
            bail!("ip netns add {name} failed (the bench needs root)");
        }
        Ok(ScratchNetns { name })
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// `program args...` inside the namespace, `input` on its stdin; the
    /// wall time it took.
    pub fn timed(&self, program: &str, args: &[&str], input: &str) -> Result<Duration> {
        self.timed_within(program, args, input, Duration::MAX)?
            .context("an unbounded load timed out")
    }

    /// Like [`ScratchNetns::timed`], but the program is killed once it has
    /// run `bound`: `None` then (the caller reports "> bound", not a figure).
    pub fn timed_within(
        &self,
        program: &str,
        args: &[&str],
        input: &str,
        bound: Duration,
    ) -> Result<Option<Duration>> {
        run_in_netns(&self.path(), program, args, input, bound)
    }
}

/// Runs `program args...` inside the network namespace at `netns`, `input`
/// on its stdin, and returns the wall time it took; the program is killed
/// once it has run `bound`, and that is `None` (the caller reports
/// "> bound", not a figure). A failure says what the program printed.
pub fn run_in_netns(
    netns: &Path,
    program: &str,
    args: &[&str],
    input: &str,
    bound: Duration,
) -> Result<Option<Duration>> {
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program} (run `cargo xtask setup`)"))?;
    let start = Instant::now();
    // Fed from a thread: a program slower than its input must not block
    // the clock that bounds it.
    let mut stdin = child.stdin.take().context("stdin")?;
    let input = input.to_string();
    let feeder = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            let _ = feeder.join();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let took = start.elapsed();
    let _ = feeder.join();
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
        }
        bail!("{program} {} failed: {}", args.join(" "), stderr.trim());
    }
    Ok(Some(took))
}

impl Drop for ScratchNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// One load of kube-proxy's iptables rules for `services` into an empty
/// namespace.
pub fn iptables_load(services: &[ServiceShape]) -> Result<Duration> {
    let netns = ScratchNetns::new()?;
    netns.timed(
        "iptables-legacy-restore",
        &["--noflush"],
        &iptables_restore(services, CLUSTER_CIDR),
    )
}

/// One load of kube-proxy's nftables table for `services` into an empty
/// namespace.
pub fn nft_load(services: &[ServiceShape]) -> Result<Duration> {
    let netns = ScratchNetns::new()?;
    netns.timed("nft", &["-f", "-"], &nft_script(services, CLUSTER_CIDR))
}

/// A full load, then one EndpointSlice change as kube-proxy writes it
/// (partial sync), in the same namespace: the two durations; the change is
/// `None` when the full load passed `bound` (and it is `None` too).
pub struct LoadAndChange {
    pub load: Option<Duration>,
    pub change: Option<Duration>,
}

/// The change: `before` with the last Service (the target) changed to
/// `changed`.
fn changed_set(before: &[ServiceShape], changed: &ServiceShape) -> Vec<ServiceShape> {
    let mut after = before.to_vec();
    if let Some(last) = after.last_mut() {
        *last = changed.clone();
    }
    after
}

/// iptables mode: `iptables-legacy-restore --noflush` of the full rule set,
/// then of the partial-sync input for the target's change.
pub fn iptables_load_and_change(
    before: &[ServiceShape],
    changed: &ServiceShape,
    bound: Duration,
) -> Result<LoadAndChange> {
    let netns = ScratchNetns::new()?;
    let restore =
        |input: &str| netns.timed_within("iptables-legacy-restore", &["--noflush"], input, bound);
    let load = restore(&iptables_restore(before, CLUSTER_CIDR))?;
    if load.is_none() {
        return Ok(LoadAndChange { load, change: None });
    }
    let target = before.last().context("no Services")?;
    let after = changed_set(before, changed);
    let change = restore(&iptables_partial(&after, target, changed, CLUSTER_CIDR))?;
    Ok(LoadAndChange { load, change })
}

/// nftables mode: `nft -f` of the full table, then of the change's
/// transaction.
pub fn nft_load_and_change(
    before: &[ServiceShape],
    changed: &ServiceShape,
    bound: Duration,
) -> Result<LoadAndChange> {
    let netns = ScratchNetns::new()?;
    let nft = |input: &str| netns.timed_within("nft", &["-f", "-"], input, bound);
    let load = nft(&nft_script(before, CLUSTER_CIDR))?;
    if load.is_none() {
        return Ok(LoadAndChange { load, change: None });
    }
    let target = before.last().context("no Services")?;
    let change = nft(&nft_partial(target, changed, CLUSTER_CIDR))?;
    Ok(LoadAndChange { load, change })
}
