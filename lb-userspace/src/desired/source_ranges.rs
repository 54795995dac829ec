//! `loadBalancerSourceRanges`, as kube-proxy reads and applies them.
//!
//! Reading (pkg/proxy/util `MapCIDRsByIPFamily`, called by
//! `newBaseServiceInfo` in pkg/proxy/serviceport.go): each entry is
//! trimmed (`strings.TrimSpace`), parsed with `ParseCIDRSloppy` (leading
//! zeros in the address read as decimal, host bits allowed and cleared),
//! and kept for its family only; an empty entry is skipped quietly, an
//! invalid one is logged ("Invalid CIDR ignored") and skipped, and the
//! Service keeps the others. The API server would have refused an invalid
//! entry, so here it is a problem (`invalid-value`) of the Service, which
//! is still served with what remains. When nothing of this family remains,
//! kube-proxy has no firewall for the Service at all
//! (`len(svcInfo.LoadBalancerSourceRanges()) > 0` guards it): every source
//! is allowed, and so it is here.
//!
//! Applying (pkg/proxy/nftables/proxier.go, the `firewall-...` chain;
//! iptables' `KUBE-FW-...`): only LoadBalancer IPs are filtered (NodePorts
//! and ClusterIPs of the Service never are), and when a range holds the
//! node's IP (`allowFromNode`) the LoadBalancer IPs themselves are allowed
//! as sources too, for VIPs the node holds as local addresses, whose
//! traffic from the node loops back with the VIP as its source.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::ServiceSpec;

use super::{problems::Problems, sloppy_ip::parse_ip_sloppy};
use crate::model::{NodeFacts, ProblemCode, SourceRange};

/// The IPv4 sources allowed to open connections to the Service's
/// LoadBalancer IPs (`lb_ips`); empty: every source (no firewall).
pub(super) fn allowed_sources(
    spec: &ServiceSpec,
    is_load_balancer: bool,
    lb_ips: &[IpAddr],
    node: &NodeFacts,
    object: &str,
    problems: &mut Problems,
) -> Vec<SourceRange> {
    let entries = spec
        .load_balancer_source_ranges
        .as_deref()
        .unwrap_or_default();
    if entries.is_empty() {
        return Vec::new();
    }
    if !is_load_balancer {
        problems.warn(
            object,
            ProblemCode::IgnoredField,
            "spec.loadBalancerSourceRanges is set but spec.type is not LoadBalancer; ignored",
        );
        return Vec::new();
    }
    let mut ranges = ipv4_ranges(entries, object, problems);
    if ranges.is_empty() {
        return ranges;
    }
    let node_inside = ranges.iter().any(|range| {
        node.addresses.iter().any(|addr| match addr {
            IpAddr::V4(v4) => range.contains(*v4),
            IpAddr::V6(_) => false,
        })
    });
    if node_inside {
        ranges.extend(lb_ips.iter().filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(SourceRange::host(*v4)),
            IpAddr::V6(_) => None,
        }));
    }
    ranges.sort();
    ranges.dedup();
    ranges
}

/// The IPv4 ranges of `entries`: trimmed, sloppy-parsed, IPv6 ones
/// skipped, invalid ones a problem each.
fn ipv4_ranges(entries: &[String], object: &str, problems: &mut Problems) -> Vec<SourceRange> {
    let mut ranges = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let text = entry.trim();
        if text.is_empty() {
            continue;
        }
        match parse_cidr_sloppy(text) {
            Some(Cidr::V4(range)) => ranges.push(range),
            Some(Cidr::V6) => {}
            None => problems.warn(
                object,
                ProblemCode::InvalidValue,
                format!(
                    "spec.loadBalancerSourceRanges[{i}] \"{text}\" is not a CIDR (like 203.0.113.0/24); \
                     ignored as kube-proxy ignores it, the other ranges still apply"
                ),
            ),
        }
    }
    ranges
}

enum Cidr {
    V4(SourceRange),
    /// Valid, of the other family.
    V6,
}

/// `ParseCIDRSloppy`: `address/prefix`, the address as `ParseIPSloppy`
/// reads it, the prefix decimal digits within the family's bits.
fn parse_cidr_sloppy(text: &str) -> Option<Cidr> {
    let (addr, prefix) = text.split_once('/')?;
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    match parse_ip_sloppy(addr)? {
        IpAddr::V4(v4) => SourceRange::new(v4, prefix).map(Cidr::V4),
        IpAddr::V6(_) if prefix <= 128 => Some(Cidr::V6),
        IpAddr::V6(_) => None,
    }
}

#[cfg(test)]
mod tests;
