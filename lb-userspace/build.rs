//! Builds the datapath (`lb-ebpf`) for the bpf target so that a plain
//! `cargo build` produces an agent with its programs embedded.
//!
//! The bpf target has no prebuilt `core`, so it needs `-Z build-std=core`;
//! on our pinned stable toolchain that takes RUSTC_BOOTSTRAP=1, and the
//! nested cargo must run on the same pinned toolchain (aya-build defaults to
//! nightly). `AYA_BUILD_SKIP=1` skips this (for `cargo check` on a machine
//! without bpf-linker); the agent then fails at start with a clear message.
use std::path::Path;

use anyhow::{Context as _, bail};

/// Keep in step with rust-toolchain.toml.
const TOOLCHAIN: &str = "1.98";

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = Path::new(&manifest_dir).join("../lb-ebpf");
    let ebpf_dir = ebpf_dir.canonicalize().context("lb-ebpf crate not found")?;
    println!("cargo::rerun-if-changed=../lb-common/src");
    if std::env::var_os("AYA_BUILD_SKIP").is_some() {
        // Unit tests and `cargo check` without bpf-linker: an empty object
        // that the loader refuses with a clear message.
        let out_dir = std::env::var("OUT_DIR").context("OUT_DIR")?;
        std::fs::write(Path::new(&out_dir).join("lb-ebpf"), [])?;
        println!("cargo::rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    if which("bpf-linker").is_none() {
        bail!(
            "bpf-linker is not on PATH: run `cargo xtask setup` (it builds bpf-linker 0.13 against LLVM 22)"
        );
    }
    // SAFETY: build scripts are single-threaded; the nested cargo inherits it.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let root_dir = ebpf_dir.to_str().context("non-UTF-8 path to lb-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lb-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(TOOLCHAIN),
    )
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
