//! Which objects the agent lists and watches: kube-proxy's selectors.

/// `apis.LabelServiceProxyName` and `v1.IsHeadlessService`.
use crate::desired::{LABEL_HEADLESS as HEADLESS, LABEL_SERVICE_PROXY_NAME as SERVICE_PROXY_NAME};

/// The label selector of both watches, as cmd/kube-proxy/app/server.go
/// builds it (`labels.NewSelector().Add(noProxyName, noHeadlessEndpoints)`,
/// which sorts the requirements by key): objects meant for another proxy
/// and headless Services' slices are not ours. With a proxy name of our own
/// we serve exactly the objects labelled with it, as alternative proxies
/// do (`service-proxy-name=<name>`, e.g. kube-router, Cilium).
pub fn label_selector(service_proxy_name: Option<&str>) -> String {
    match service_proxy_name {
        None => format!("!{HEADLESS},!{SERVICE_PROXY_NAME}"),
        Some(name) => format!("!{HEADLESS},{SERVICE_PROXY_NAME}={name}"),
    }
}

/// This node's Node object and nothing else.
pub fn node_field_selector(node_name: &str) -> String {
    format!("metadata.name={node_name}")
}

/// A `--service-proxy-name` a label value can hold (63 characters at most,
/// alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric), so the
/// selector cannot be malformed by it.
pub fn check_proxy_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let alnum_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if name.len() <= 63 && valid_chars && alnum_ends {
        Ok(())
    } else {
        Err(format!(
            "--service-proxy-name {name:?} is not a label value: use at most 63 letters, digits, \
             '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}
