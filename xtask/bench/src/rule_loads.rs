//! How long kube-proxy's own rule sets take to load, as one transaction
//! each (`iptables-nft-restore`, `nft -f`), at a given Service count: the
//! control-plane figure the agent's full sync is compared with.
//!
//! Every load runs inside a network namespace made for it, so the
//! machine's own netfilter tables are never touched, and the namespace is
//! removed when the guard drops, also on failure.

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::kube_proxy_rules::{ServiceShape, iptables_restore, nft_script};

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
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", self.path().display()))
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {program} (run `cargo xtask setup`)"))?;
        let start = Instant::now();
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        let took = start.elapsed();
        if !out.status.success() {
            bail!(
                "{program} {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(took)
    }
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
        "iptables-nft-restore",
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
