//! Builds the datapath (`lb-ebpf`) for the bpf target so that a plain
//! `cargo build` produces an agent with its programs embedded.
//!
//! The bpf target has no prebuilt `core`, so it needs `-Z build-std=core`;
//! on our pinned stable toolchain that takes RUSTC_BOOTSTRAP=1, and the
//! nested cargo must run on the same pinned toolchain (aya-build defaults to
//! nightly).
//!
//! Without bpf-linker (a newcomer's `cargo test`), or with `AYA_BUILD_SKIP=1`,
//! the object is left empty with a warning: the unit tests need no datapath,
//! and the agent refuses an empty object at start with a clear message.
//! `LB_REQUIRE_EBPF=1` (set by every `cargo xtask` build) makes a missing
//! bpf-linker an error instead, so no task ever ships the empty object.
use std::path::Path;

use anyhow::{Context as _, bail};

/// Keep in step with rust-toolchain.toml.
const TOOLCHAIN: &str = "1.98";

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = Path::new(&manifest_dir).join("../lb-ebpf");
    let ebpf_dir = ebpf_dir.canonicalize().context("lb-ebpf crate not found")?;
    println!("cargo::rerun-if-changed=../lb-common/src");
    println!("cargo::rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo::rerun-if-env-changed=LB_REQUIRE_EBPF");
    println!("cargo::rerun-if-env-changed=PATH");
    let required = std::env::var_os("LB_REQUIRE_EBPF").is_some();
    if std::env::var_os("AYA_BUILD_SKIP").is_some() && !required {
        return write_empty_object();
    }
    if which("bpf-linker").is_none() {
        if required {
            bail!(
                "bpf-linker is not on PATH: run `cargo xtask setup` (it builds bpf-linker 0.13 against LLVM 22)"
            );
        }
        println!(
            "cargo::warning=bpf-linker is not on PATH: lb is built without its datapath (unit tests run; the agent will refuse to start). Run `cargo xtask setup` to build it."
        );
        return write_empty_object();
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

/// An empty object in place of the datapath, which the loader refuses with
/// a clear message.
fn write_empty_object() -> anyhow::Result<()> {
    let out_dir = std::env::var("OUT_DIR").context("OUT_DIR")?;
    std::fs::write(Path::new(&out_dir).join("lb-ebpf"), [])?;
    Ok(())
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
