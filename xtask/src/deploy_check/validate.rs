//! Manifests against the Kubernetes API schemas, with kubernetes-validate
//! in strict mode (unknown fields are errors), and the proof, on every run,
//! that it rejects what it must.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// What kubernetes-validate reported against one version, one line per
/// problem. It exits 0 when it finds no schema for a kind (a misspelt kind
/// or apiVersion), printing only a warning: every WARN and ERROR line is a
/// problem here.
pub fn problems(output: &str) -> Vec<String> {
    output
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("ERROR") || line.starts_with("WARN"))
        .map(str::to_owned)
        .collect()
}

/// Validates `files` against Kubernetes `version` (e.g. "1.29.0").
pub fn validate(tool: &Path, version: &str, files: &[PathBuf]) -> Result<()> {
    let out = Command::new(tool)
        .args(["--strict", "--quiet", "--kubernetes-version", version])
        .args(files)
        .output()
        .with_context(|| format!("running {}", tool.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let found = problems(&text);
    if !out.status.success() || !found.is_empty() {
        bail!(
            "manifests do not validate against Kubernetes {version} ({}); fix them or the schema version:\n{}",
            out.status,
            if found.is_empty() {
                text
            } else {
                found.join("\n")
            }
        );
    }
    Ok(())
}

/// A DaemonSet with a misspelt field, a kind that does not exist, and a
/// valid ConfigMap: the step is only worth something if the first two fail
/// and the third passes, with the options the real check uses.
const BROKEN_FIELD: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: broken}
spec:
  selector: {matchLabels: {app: broken}}
  template:
    metadata: {labels: {app: broken}}
    spec:
      containers:
        - name: broken
          image: broken
          imagePullPolicyy: Always
";
const UNKNOWN_KIND: &str = "apiVersion: apps/v1
kind: DeamonSet
metadata: {name: broken}
";
const VALID: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: fine}
data: {key: value}
";

/// Runs the validator on the three documents above against `version`.
pub fn self_check(tool: &Path, version: &str, scratch: &Path) -> Result<()> {
    fs::create_dir_all(scratch)?;
    for (name, text, valid) in [
        ("broken-field.yaml", BROKEN_FIELD, false),
        ("unknown-kind.yaml", UNKNOWN_KIND, false),
        ("valid.yaml", VALID, true),
    ] {
        let file = scratch.join(name);
        fs::write(&file, text)?;
        let outcome = validate(tool, version, &[file]);
        if outcome.is_ok() != valid {
            bail!(
                "kubernetes-validate {} {name} against {version}: the deploy check cannot be trusted ({})",
                if valid { "rejects" } else { "accepts" },
                outcome.err().map(|e| format!("{e:#}")).unwrap_or_default()
            );
        }
    }
    Ok(())
}
