//! `cargo xtask setup`: everything a new Debian 12 machine needs to build,
//! run and test lb. Idempotent: each step checks first and says what it does
//! only when it does something.

use std::{
    fs,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

/// Debian packages: LLVM 22 (bpf-linker links against the LLVM major of the
/// pinned rustc) and the tools the tests and the demo drive.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "libxml2-dev",
    "iproute2",
    "ethtool",
    "util-linux",
    "bpftool",
    // The bench loads kube-proxy's own rule shapes to compare with.
    "iptables",
    "nftables",
    // The deploy validators run from a Python venv (deploy_check::tools).
    "python3-venv",
];
pub(crate) const BPF_LINKER_VERSION: &str = "0.13";
pub(crate) const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

pub fn setup() -> Result<()> {
    apt_packages()?;
    toolchain()?;
    bpf_linker()?;
    bpffs()?;
    cgroup2()?;
    crate::deploy_check::install_tools()?;
    crate::apiserver::build()?;
    Ok(())
}

pub(crate) fn step(what: &str) {
    eprintln!("setup: {what}");
}

pub(crate) fn is_root() -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::geteuid() == 0 }
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("missing Debian packages {missing:?}: run `cargo xtask setup` as root");
    }
    step(&format!("installing Debian packages {}", missing.join(" ")));
    apt_install(&missing)
}

/// `apt-get install` (as root), after refreshing the package lists.
pub(crate) fn apt_install(packages: &[&str]) -> Result<()> {
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// The toolchain pinned in rust-toolchain.toml, with rust-src (build-std
/// for the bpf target), clippy and rustfmt. Running xtask at all needs the
/// toolchain, but a component may still be missing.
fn toolchain() -> Result<()> {
    let installed = output(Command::new("rustup").args(["component", "list", "--installed"]))?;
    let missing: Vec<&str> = ["rust-src", "clippy", "rustfmt"]
        .into_iter()
        .filter(|c| !installed.lines().any(|l| l.starts_with(c)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!(
        "installing toolchain components {}",
        missing.join(" ")
    ));
    run(Command::new("rustup").args(["toolchain", "install"]))
}

fn bpf_linker() -> Result<()> {
    let current = Command::new("bpf-linker").arg("--version").output();
    if let Ok(out) = &current
        && String::from_utf8_lossy(&out.stdout)
            .contains(&format!("bpf-linker {BPF_LINKER_VERSION}"))
    {
        return Ok(());
    }
    step(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a few minutes, once)"
    ));
    let path = format!("{LLVM_BIN}:{}", std::env::var("PATH").unwrap_or_default());
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            &format!("^{BPF_LINKER_VERSION}"),
            "--locked",
            "--force",
        ])
        .args(["--no-default-features", "--features", "llvm-22"])
        .env("PATH", path))
}

fn bpffs() -> Result<()> {
    if mount_type_at("/sys/fs/bpf").as_deref() == Some("bpf") {
        return Ok(());
    }
    if !is_root() {
        bail!("bpffs is not mounted at /sys/fs/bpf: run `cargo xtask setup` as root");
    }
    step("mounting bpffs at /sys/fs/bpf");
    fs::create_dir_all("/sys/fs/bpf")?;
    run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

fn cgroup2() -> Result<()> {
    if crate::testbed::cgroup2_mount().is_ok() {
        return Ok(());
    }
    if !is_root() {
        bail!("no cgroup v2 mount: run `cargo xtask setup` as root");
    }
    // Hybrid hierarchy hosts (like this one) keep v2 here; the agent takes
    // the path as a flag, so any location works.
    let target = "/sys/fs/cgroup/unified";
    step(&format!("mounting cgroup v2 at {target}"));
    fs::create_dir_all(target)?;
    run(Command::new("mount").args(["-t", "cgroup2", "none", target]))
}

fn mount_type_at(path: &str) -> Option<String> {
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&path)).then(|| fields[2].to_string())
    })
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
