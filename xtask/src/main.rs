use std::process::{Command, ExitCode};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use xtask::{demo, deploy_check, setup, traffic::target_dir};

#[derive(Parser)]
#[command(about = "Project tasks for lb")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what a new machine needs (Debian packages, toolchain
    /// components, bpf-linker, the test API server), mount bpffs, locate
    /// cgroup v2.
    Setup,
    /// Setup, then build every binary.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Setup, build, and run the agent on this machine (a dev VM):
    /// `cargo xtask run -- --device eth0 --manifests DIR ...`.
    Run {
        #[arg(long)]
        release: bool,
        /// Arguments for `lb agent`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Setup, then every check and test: formatting, the deploy manifests
    /// and Containerfile, clippy, unit, kernel, end-to-end and watch tests
    /// (root tests need root, as CI has), and a quick bench run that proves
    /// the bench works.
    Test,
    /// Setup, then only the deploy checks `test` runs first: every manifest
    /// under deploy/ against the Kubernetes schemas, and the Containerfile.
    CheckDeploy,
    /// Setup, build (release), and measure lb against kube-proxy's rule
    /// shapes and against the limit; writes a report with plots (root).
    Bench {
        /// A reduced set in a minute or two that proves the bench works
        /// (`cargo xtask test` runs it); its numbers mean little.
        #[arg(long)]
        quick: bool,
        /// Where the run's directory (named by date) goes [default:
        /// xtask/bench/results, or target/bench-quick with --quick].
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Setup, build, and show Services load-balanced across three pods in
    /// a namespace topology; exits non-zero if anything fails.
    Demo,
    /// Print the demo's EndpointSlices (regenerates
    /// deploy/examples/demo/endpointslices.yaml).
    #[command(hide = true)]
    RenderDemoSlices,
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    match task {
        Task::Setup => setup::setup(),
        Task::Build { release } => {
            setup::setup()?;
            build(release)
        }
        Task::Run { release, args } => {
            setup::setup()?;
            build(release)?;
            let profile = if release { "release" } else { "debug" };
            let lb = target_dir().join(profile).join("lb");
            let status = Command::new(lb).arg("agent").args(args).status()?;
            if !status.success() {
                bail!("lb agent exited with {status}");
            }
            Ok(())
        }
        Task::Test => {
            check_free_disk()?;
            setup::setup()?;
            cargo(&["fmt", "--all", "--", "--check"])?;
            // deploy/ against the Kubernetes schemas, before the slow layers.
            deploy_check::check(&workspace_root())?;
            build(false)?;
            lint()?;
            // Every layer: unit tests (the default members), then the
            // privileged kernel and end-to-end suites, then the watch tests
            // against the test API server (setup built it). A failing layer
            // does not hide the next one's results.
            let layers = cargo(&[
                "test",
                "--no-fail-fast",
                "--workspace",
                "--exclude",
                "lb-ebpf",
                "--exclude",
                "lb-watch-tests",
            ]);
            let watch = cargo(&["test", "--no-fail-fast", "-p", "lb-watch-tests"]);
            layers.and(watch)?;
            // The bench, reduced, proves it still works (no speed is
            // asserted anywhere: this machine is shared and noisy).
            bench(true, None)
        }
        Task::CheckDeploy => {
            setup::setup()?;
            deploy_check::check(&workspace_root())
        }
        Task::Bench { quick, out } => {
            setup::setup()?;
            bench(quick, out)
        }
        Task::RenderDemoSlices => {
            print!("{}", xtask::manifests::endpoint_slices(&[0, 1, 2]));
            Ok(())
        }
        Task::Demo => {
            setup::setup()?;
            build(false)?;
            demo::demo()
        }
    }
}

fn workspace_root() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

/// Clippy on the host crates, then on the datapath for the bpf target (a
/// host build of lb-ebpf means nothing, so it is linted where it runs).
fn lint() -> Result<()> {
    cargo(&[
        "clippy",
        "--workspace",
        "--exclude",
        "lb-ebpf",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ])?;
    eprintln!("xtask: cargo clippy (lb-ebpf, bpf target)");
    let ebpf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../lb-ebpf");
    setup::run(
        Command::new(env!("CARGO"))
            .current_dir(ebpf)
            .args([
                "clippy",
                "--quiet",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
            ])
            .args(["--", "-D", "warnings"])
            .env("RUSTC_BOOTSTRAP", "1"),
    )
}

/// Builds the release binaries and runs the bench runner (`lb-bench`),
/// which drives them.
fn bench(quick: bool, out: Option<std::path::PathBuf>) -> Result<()> {
    build(true)?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = out.unwrap_or_else(|| {
        if quick {
            target_dir().join("bench-quick")
        } else {
            root.join("xtask/bench/results")
        }
    });
    let mut runner = Command::new(target_dir().join("release/lb-bench"));
    runner.arg("--out").arg(out);
    if quick {
        runner.arg("--quick");
    }
    eprintln!("xtask: lb-bench{}", if quick { " --quick" } else { "" });
    let status = runner.status()?;
    if !status.success() {
        bail!("the bench failed ({status})");
    }
    Ok(())
}

fn build(release: bool) -> Result<()> {
    let mut args = vec!["build", "--bins"];
    if release {
        args.push("--release");
    }
    cargo(&args)
}

/// Runs cargo for a task. The tasks' builds must embed the real datapath,
/// never the empty stand-in a machine without bpf-linker gets.
///
/// On CI (`CI=true`) the build is incremental for nothing: a clean clone
/// builds once. Its incremental state was 2.9 GB of the suite's disk.
fn cargo(args: &[&str]) -> Result<()> {
    eprintln!("xtask: cargo {}", args.join(" "));
    let mut command = Command::new(env!("CARGO"));
    command.args(args).env("LB_REQUIRE_EBPF", "1");
    let on_ci = std::env::var("CI").is_ok_and(|value| value == "true");
    if on_ci && std::env::var_os("CARGO_INCREMENTAL").is_none() {
        command.env("CARGO_INCREMENTAL", "0");
    }
    setup::run(&mut command)
}

/// What a clean `cargo xtask test` writes under target/, measured (debug
/// and release builds, the bench's quick run), with some room.
const SUITE_DISK_GIB: u64 = 8;

/// Says how much disk target/ has before the builds start, and fails early
/// and clearly when the suite cannot fit: a full disk otherwise shows up
/// minutes later as a linker's bus error.
fn check_free_disk() -> Result<()> {
    let target = target_dir();
    std::fs::create_dir_all(&target)?;
    let free_gib = free_bytes(&target)? >> 30;
    eprintln!(
        "xtask: {free_gib} GiB free for {} (the suite writes about {SUITE_DISK_GIB} GiB)",
        target.display()
    );
    if free_gib >= SUITE_DISK_GIB {
        return Ok(());
    }
    // A target/ that holds the agent's build already (not only xtask's, which
    // cargo built to get here) needs far less: say it, go on.
    if target.join("debug/lb").exists() {
        eprintln!("xtask: warning: little disk left; the builds may fail with a full disk");
        return Ok(());
    }
    bail!(
        "only {free_gib} GiB free for {}: the suite needs about {SUITE_DISK_GIB} GiB; free some disk (an old target/ with `cargo clean`) and run it again",
        target.display()
    )
}

fn free_bytes(path: &std::path::Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: statvfs only writes the struct it is given.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}
