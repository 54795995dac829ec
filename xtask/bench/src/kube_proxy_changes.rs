//! The transaction kube-proxy writes for one EndpointSlice change, in each
//! mode, for the same rule shapes as [`crate::kube_proxy_rules`]:
//!
//! - iptables mode, partial sync (pkg/proxy/iptables/proxier.go,
//!   `tryPartialSync`): `iptables-restore --noflush` with the top-level
//!   chains (KUBE-SERVICES, KUBE-NODEPORTS, ...) rewritten whole, the
//!   changed Service's KUBE-SVC and KUBE-SEP chains, and `-X` for the
//!   KUBE-SEP chains of endpoints that went; unchanged Services' chains are
//!   left out.
//! - nftables mode (pkg/proxy/nftables/proxier.go): only the changed
//!   Service's chains, each flushed and refilled, new endpoint chains
//!   added and stale ones deleted, in one `nft -f` transaction.
//!
//! Both are cut out of the full rule text for the Service after the change,
//! so they name the same chains the full load created.

use std::collections::BTreeSet;

use crate::kube_proxy_rules::{ServiceShape, iptables_restore, nft_script};

/// iptables-restore `--noflush` input that takes the rules loaded from
/// `iptables_restore(before)` to those of `after`, where only `changed`
/// (the same Service in both) differs.
pub fn iptables_partial(
    after: &[ServiceShape],
    changed_before: &ServiceShape,
    changed_after: &ServiceShape,
    cluster_cidr: &str,
) -> String {
    let own = |shape: &ServiceShape| -> BTreeSet<String> {
        iptables_restore(std::slice::from_ref(shape), cluster_cidr)
            .lines()
            .filter_map(|l| l.strip_prefix(':')?.split_whitespace().next())
            .filter(|c| c.starts_with("KUBE-SVC-") || c.starts_with("KUBE-SEP-"))
            .map(str::to_string)
            .collect()
    };
    let written = own(changed_after);
    let stale: Vec<String> = own(changed_before).difference(&written).cloned().collect();
    let kept = |chain: &str| {
        chain.starts_with("KUBE-")
            && (written.contains(chain)
                || !(chain.starts_with("KUBE-SVC-") || chain.starts_with("KUBE-SEP-")))
    };
    let mut out = String::from("*nat\n");
    for line in iptables_restore(after, cluster_cidr).lines() {
        let chain = line
            .strip_prefix(':')
            .or_else(|| line.strip_prefix("-A "))
            .and_then(|rest| rest.split_whitespace().next());
        if chain.is_some_and(kept) {
            out.push_str(line);
            out.push('\n');
        }
    }
    // A chain must be empty to go: declared (which flushes it) then
    // deleted, as kube-proxy's proxier does with the chains no longer used.
    for chain in &stale {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for chain in &stale {
        out.push_str(&format!("-X {chain}\n"));
    }
    out.push_str("COMMIT\n");
    out
}

/// The chain blocks (`  chain NAME {` ... `  }`) of one Service in the
/// nftables text, by name.
fn service_chains(shape: &ServiceShape, cluster_cidr: &str) -> Vec<(String, String)> {
    let text = nft_script(std::slice::from_ref(shape), cluster_cidr);
    let mut chains = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some((name, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
            if line == "  }" {
                chains.push((std::mem::take(name), std::mem::take(body)));
                current = None;
            }
            continue;
        }
        let Some(name) = line
            .strip_prefix("  chain ")
            .and_then(|rest| rest.strip_suffix(" {"))
        else {
            continue;
        };
        if ["service-", "external-", "endpoint-"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            current = Some((name.to_string(), format!("{line}\n")));
        }
    }
    chains
}

/// `nft -f` input that takes the table loaded from `nft_script(before)` to
/// that of the change of one Service from `changed_before` to
/// `changed_after`.
pub fn nft_partial(
    changed_before: &ServiceShape,
    changed_after: &ServiceShape,
    cluster_cidr: &str,
) -> String {
    let before: BTreeSet<String> = service_chains(changed_before, cluster_cidr)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let after = service_chains(changed_after, cluster_cidr);
    let mut out = String::new();
    // Flushed first: the service chain's verdict map is what refers to the
    // endpoint chains that are deleted next.
    for (name, _) in after.iter().filter(|(name, _)| before.contains(name)) {
        out.push_str(&format!("flush chain ip kube-proxy {name}\n"));
    }
    let kept: BTreeSet<&String> = after.iter().map(|(name, _)| name).collect();
    for name in before.iter().filter(|name| !kept.contains(name)) {
        out.push_str(&format!("delete chain ip kube-proxy {name}\n"));
    }
    out.push_str("table ip kube-proxy {\n");
    for (_, body) in &after {
        out.push_str(body);
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::service_shapes;

    const CIDR: &str = "10.244.0.0/16";

    fn change(services: usize) -> (Vec<ServiceShape>, ServiceShape, ServiceShape) {
        let mut after = service_shapes(services);
        let before = after.last().cloned().expect("target");
        after.last_mut().expect("target").endpoints.remove(0);
        let changed = after.last().cloned().expect("target");
        (after, before, changed)
    }

    #[test]
    fn iptables_partial_writes_the_top_chains_and_the_changed_service_only() {
        let (after, before, changed) = change(50);
        let text = iptables_partial(&after, &before, &changed, CIDR);
        assert!(text.starts_with("*nat\n") && text.ends_with("COMMIT\n"));
        // Every Service's jump in KUBE-SERVICES is rewritten ...
        let jumps = text
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES"))
            .count();
        assert_eq!(jumps, 50 + 1);
        // ... but only the target's own chains: one SVC, two SEP.
        let declared = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
        assert_eq!(declared(":KUBE-SVC-"), 1);
        assert_eq!(declared(":KUBE-SEP-"), 2 + 1);
        assert_eq!(declared("-X KUBE-SEP-"), 1);
        // The target's mark rule and two endpoint jumps; two rules per SEP.
        assert_eq!(declared("-A KUBE-SVC-"), 3);
        assert_eq!(declared("-A KUBE-SEP-"), 4);
        assert!(
            !text.contains(":PREROUTING"),
            "built-in chains are not flushed"
        );
        // The stale endpoint's chain is the one of the removed pod.
        assert!(!text.contains("203.0.113.11:8080"));
        assert!(text.contains("DNAT --to-destination 203.0.113.12:8080"));
    }

    #[test]
    fn nft_partial_refills_the_changed_chains_and_drops_the_stale_one() {
        let (_, before, changed) = change(50);
        let text = nft_partial(&before, &changed, CIDR);
        let flushed = text
            .lines()
            .filter(|l| l.starts_with("flush chain"))
            .count();
        // service, external (NodePort), and the two endpoints that stay.
        assert_eq!(flushed, 4);
        let deleted: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("delete chain"))
            .collect();
        assert_eq!(deleted.len(), 1);
        assert!(
            deleted[0].ends_with("__203.0.113.11/8080"),
            "{}",
            deleted[0]
        );
        assert!(text.contains("numgen random mod 2 vmap"));
        assert!(!text.contains("filler"));
        assert!(!text.contains("map service-ips"), "unchanged maps stay");
    }
}
