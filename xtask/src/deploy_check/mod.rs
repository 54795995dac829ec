//! The deploy step of `cargo xtask test`: every manifest under deploy/ and
//! the rendered kustomization against the Kubernetes API schemas of the
//! oldest and newest versions lb supports (kubernetes-validate, strict),
//! after proving the validator rejects a broken manifest; the
//! kustomization's images; and deploy/Containerfile (hadolint, stages, COPY
//! sources, the builder's pins), since no container engine runs here.

mod containerfile;
mod manifests;
mod tools;
mod validate;

#[cfg(test)]
mod tests;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};

pub use manifests::agent_capabilities;
pub use tools::install as install_tools;

use crate::{setup, traffic::target_dir};

/// The oldest and the newest Kubernetes the manifests are validated for.
pub const KUBERNETES_VERSIONS: [&str; 2] = ["1.29.0", "1.37.0"];

/// Runs every deploy check on the repository at `root`.
pub fn check(root: &Path) -> Result<()> {
    let started = Instant::now();
    let tools = tools::Tools::installed()?;
    let deploy = root.join("deploy");
    let scratch = target_dir().join("deploy-check");
    fs::create_dir_all(&scratch)?;
    for version in KUBERNETES_VERSIONS {
        validate::self_check(
            &tools.kubernetes_validate,
            version,
            &scratch.join("self-check"),
        )?;
    }
    let rendered = manifests::render(&tools.kubectl, &deploy)?;
    let kustomization = fs::read_to_string(deploy.join(manifests::KUSTOMIZATION))?;
    manifests::agent_capabilities(&fs::read_to_string(deploy.join("daemonset.yaml"))?)?;
    let problems = manifests::image_problems(&kustomization, &rendered)?;
    if !problems.is_empty() {
        bail!("deploy/kustomization.yaml:\n{}", problems.join("\n"));
    }
    let rendered_file = scratch.join("rendered-kustomization.yaml");
    fs::write(&rendered_file, &rendered)?;
    let mut files = manifests::files(&deploy)?;
    files.push(rendered_file);
    for version in KUBERNETES_VERSIONS {
        validate::validate(&tools.kubernetes_validate, version, &files)?;
    }
    check_containerfile(root, &tools.hadolint)?;
    eprintln!(
        "xtask: deploy/ checked: {} manifests and the rendered kustomization valid for Kubernetes {} (strict), Containerfile clean, in {:.1} s",
        files.len() - 1,
        KUBERNETES_VERSIONS.join(" and "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn check_containerfile(root: &Path, hadolint: &Path) -> Result<()> {
    let path = root.join("deploy/Containerfile");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let ignore =
        fs::read_to_string(root.join("deploy/Containerfile.dockerignore")).unwrap_or_default();
    let toolchain = fs::read_to_string(root.join("rust-toolchain.toml"))?;
    let channel = containerfile::toolchain_channel(&toolchain)
        .context("rust-toolchain.toml has no channel")?;
    let mut problems =
        containerfile::problems(&text, root, &containerfile::ignore_patterns(&ignore));
    problems.extend(containerfile::pin_problems(
        &text,
        &channel,
        setup::LLVM_BIN,
        setup::BPF_LINKER_VERSION,
    ));
    if !problems.is_empty() {
        bail!("{}:\n{}", path.display(), problems.join("\n"));
    }
    lint(hadolint, &path)
}

fn lint(hadolint: &Path, path: &PathBuf) -> Result<()> {
    let out = Command::new(hadolint)
        .arg("--no-color")
        .arg(path)
        .output()
        .with_context(|| format!("running {}", hadolint.display()))?;
    if !out.status.success() {
        bail!(
            "hadolint finds problems in {} (fix them, or silence one with a `# hadolint ignore=<rule>` comment saying why):\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(())
}
