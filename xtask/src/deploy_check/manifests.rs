//! Which files under deploy/ are manifests, the kustomization rendered as
//! `kubectl apply -k` sees it, and the images it sets.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub const KUSTOMIZATION: &str = "kustomization.yaml";

/// Every YAML file under `dir`, sorted, but kustomizations (a kustomize
/// input, not an API object).
pub fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    collect(dir, &mut found)?;
    found.sort();
    Ok(found)
}

fn collect(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, found)?;
        } else if is_manifest(&path) {
            found.push(path);
        }
    }
    Ok(())
}

fn is_manifest(path: &Path) -> bool {
    let yaml = path
        .extension()
        .is_some_and(|ext| ext == "yaml" || ext == "yml");
    yaml && path.file_name().is_some_and(|name| name != KUSTOMIZATION)
}

/// `kubectl kustomize dir`: what `kubectl apply -k dir` applies.
pub fn render(kubectl: &Path, dir: &Path) -> Result<String> {
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .with_context(|| format!("running {} kustomize", kubectl.display()))?;
    if !out.status.success() {
        bail!(
            "`kubectl kustomize {}` failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every `images` entry of the kustomization must have replaced a
/// container image in the rendered objects (kustomize silently leaves an
/// image whose name matches nothing), and no container may be left with
/// an image the kustomization does not set.
pub fn image_problems(kustomization: &str, rendered: &str) -> Result<Vec<String>> {
    let kustomization: Value =
        serde_saphyr::from_str(kustomization).context("parsing kustomization.yaml")?;
    let wanted: Vec<String> = kustomization["images"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|image| {
            let name = image["newName"].as_str().or(image["name"].as_str());
            let tag = image["newTag"].as_str();
            match (name, tag) {
                (Some(name), Some(tag)) => format!("{name}:{tag}"),
                (Some(name), None) => name.to_owned(),
                _ => String::new(),
            }
        })
        .collect();
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(rendered).context("parsing the rendered kustomization")?;
    let used: Vec<(String, String)> = docs.iter().flat_map(container_images).collect();
    let mut problems = Vec::new();
    for image in &wanted {
        if !used.iter().any(|(_, used)| used == image) {
            problems.push(format!(
                "kustomization.yaml sets image {image:?}, but no container uses it: its `name` matches no container image"
            ));
        }
    }
    for (object, image) in &used {
        if !wanted.contains(image) {
            problems.push(format!(
                "{object} runs image {image:?}, which kustomization.yaml's `images` does not set"
            ));
        }
    }
    Ok(problems)
}

/// (kind/name, image) of every container and init container of a
/// workload's pod template.
fn container_images(doc: &Value) -> Vec<(String, String)> {
    let object = format!(
        "{}/{}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    );
    let pod = &doc["spec"]["template"]["spec"];
    ["containers", "initContainers"]
        .iter()
        .filter_map(|list| pod[list].as_array())
        .flatten()
        .filter_map(|container| container["image"].as_str())
        .map(|image| (object.clone(), image.to_owned()))
        .collect()
}

/// The capabilities the DaemonSet's agent container adds (`BPF`,
/// `NET_ADMIN`, ...), checked to be all it has: not privileged, and every
/// other capability dropped. The end-to-end tests run the agent with
/// exactly these.
pub fn agent_capabilities(daemonset: &str) -> Result<Vec<String>> {
    let doc: Value = serde_saphyr::from_str(daemonset).context("parsing the DaemonSet")?;
    let containers = doc["spec"]["template"]["spec"]["containers"].as_array();
    let Some(agent) = containers.into_iter().flatten().find(|c| c["name"] == "lb") else {
        bail!("the DaemonSet has no container named lb");
    };
    let security = &agent["securityContext"];
    if security["privileged"].as_bool() != Some(false) {
        bail!("the lb container must say `privileged: false`");
    }
    let strings = |list: &Value| -> Vec<String> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    if strings(&security["capabilities"]["drop"]) != ["ALL"] {
        bail!("the lb container must drop ALL capabilities and add back only what it needs");
    }
    Ok(strings(&security["capabilities"]["add"]))
}
