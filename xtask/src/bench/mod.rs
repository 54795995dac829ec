//! `cargo xtask bench`: where lb stands against kube-proxy and against the
//! limit, measured side by side in one run (design.md section 7).
pub mod kube_proxy_rules;
pub mod rule_loads;
pub mod stats;
