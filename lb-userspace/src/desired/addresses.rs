//! Addresses that would capture traffic that is not the Service's: the
//! API server's `ValidateNonSpecialIP` (pkg/apis/core/validation; used for
//! externalIPs, Endpoints and EndpointSlices) widened to every address lb
//! turns into a frontend or a backend, plus the cluster's own ranges
//! ([`Rules`]). A refused address is skipped and named in a problem; the
//! rest of its object keeps working.

use std::net::IpAddr;

use super::rules::Rules;
use crate::model::{NodeFacts, ProblemCode};

/// What becomes of one address.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Accept,
    /// Served, with a problem of severity warning.
    Warn(ProblemCode, String),
    /// Not served.
    Refuse(ProblemCode, String),
}

/// Why an address can be no frontend or backend: upstream's
/// `ValidateNonSpecialIP` (unspecified, loopback, link-local unicast,
/// link-local multicast), widened to all multicast and the limited
/// broadcast address, which no Service or pod can own either.
pub(super) fn special(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) if v4.is_unspecified() => Some("may not be unspecified (0.0.0.0)"),
        IpAddr::V4(v4) if v4.is_loopback() => {
            Some("may not be in the loopback range (127.0.0.0/8)")
        }
        IpAddr::V4(v4) if v4.is_link_local() => {
            Some("may not be in the link-local range (169.254.0.0/16)")
        }
        IpAddr::V4(v4) if v4.is_multicast() => Some("may not be multicast (224.0.0.0/4)"),
        IpAddr::V4(v4) if v4.is_broadcast() => {
            Some("may not be the broadcast address (255.255.255.255)")
        }
        IpAddr::V6(v6) if v6.is_unspecified() => Some("may not be unspecified (::)"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("may not be loopback (::1/128)"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => {
            Some("may not be in the link-local range (fe80::/10)")
        }
        IpAddr::V6(v6) if v6.is_multicast() => Some("may not be multicast (ff00::/8)"),
        _ => None,
    }
}

fn refuse_special(field: &str, addr: IpAddr) -> Option<Verdict> {
    special(addr).map(|why| {
        Verdict::Refuse(
            ProblemCode::ReservedAddress,
            format!(
                "{field} \"{addr}\" {why}: it would capture traffic that is not this Service's; it is not served, use an address the cluster allocated"
            ),
        )
    })
}

/// A ClusterIP: no special address (the API server allocates only from
/// `--service-cluster-ip-range`, which holds none), and inside a
/// `--service-cidr` when any is given.
pub(super) fn cluster_ip(field: &str, addr: IpAddr, rules: &Rules) -> Verdict {
    if let Some(refused) = refuse_special(field, addr) {
        return refused;
    }
    if !rules.service_cidrs.is_empty() && !rules.service_cidrs.iter().any(|c| c.contains(addr)) {
        return Verdict::Refuse(
            ProblemCode::OutsideServiceCidr,
            format!(
                "{field} \"{addr}\" is outside the service CIDRs ({}): it is not served; use an address in them, or start lb with the cluster's --service-cidr",
                list(&rules.service_cidrs)
            ),
        );
    }
    Verdict::Accept
}

/// An externalIP: `ValidateNonSpecialIP`, then the operator's allowed
/// ranges when given (the DenyServiceExternalIPs pattern). One of the
/// node's own addresses is served, as kube-proxy does, but warned about:
/// it takes that port of the node from whatever listens there
/// (CVE-2020-8554).
pub(super) fn external_ip(field: &str, addr: IpAddr, rules: &Rules, node: &NodeFacts) -> Verdict {
    if let Some(refused) = refuse_special(field, addr) {
        return refused;
    }
    let allowed = &rules.allowed_external_ip_cidrs;
    if !allowed.is_empty() && !allowed.iter().any(|c| c.contains(addr)) {
        return Verdict::Refuse(
            ProblemCode::ExternalIpNotAllowed,
            format!(
                "{field} \"{addr}\" is outside the allowed externalIP ranges ({}): it is not served; use an address in them, or add a --allow-external-ip-cidr",
                list(allowed)
            ),
        );
    }
    if node.addresses.contains(&addr) {
        return Verdict::Warn(
            ProblemCode::ExternalIpIsNodeAddress,
            format!(
                "{field} \"{addr}\" is an address of this node: its ports are taken from whatever listens on the node (CVE-2020-8554); served as kube-proxy does, restrict externalIPs with --allow-external-ip-cidr"
            ),
        );
    }
    Verdict::Accept
}

/// A load balancer ingress IP: no special address (lb's rule: a
/// manifest can set status, and a loopback ingress IP would capture the
/// node's own traffic as a ClusterIP would).
pub(super) fn load_balancer_ip(field: &str, addr: IpAddr) -> Verdict {
    refuse_special(field, addr).unwrap_or(Verdict::Accept)
}

/// An endpoint address: `ValidateNonSpecialIP`, as upstream's EndpointSlice
/// validation applies it to every address.
pub(super) fn endpoint(field: &str, addr: IpAddr) -> Verdict {
    match special(addr) {
        Some(why) => Verdict::Refuse(
            ProblemCode::ReservedAddress,
            format!(
                "{field} \"{addr}\" {why}: no pod can be reached there; the endpoint is not used"
            ),
        ),
        None => Verdict::Accept,
    }
}

fn list(cidrs: &[super::rules::Cidr]) -> String {
    cidrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{rules::Cidr, test_support::node};

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn code(verdict: Verdict) -> Option<ProblemCode> {
        match verdict {
            Verdict::Accept => None,
            Verdict::Warn(code, _) | Verdict::Refuse(code, _) => Some(code),
        }
    }

    /// Upstream: `ValidateNonSpecialIP` (unspecified, loopback, link-local
    /// unicast, link-local multicast), here widened to all multicast and
    /// the limited broadcast address; the edges of each range.
    #[test]
    fn special_addresses_are_validate_non_special_ip_widened() {
        for special_ip in [
            "0.0.0.0",
            "127.0.0.0",
            "127.255.255.255",
            "169.254.0.0",
            "169.254.255.255",
            "224.0.0.0",
            "224.0.0.255",
            "239.255.255.255",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(special(ip(special_ip)).is_some(), "{special_ip}");
        }
        for plain in [
            "0.0.0.1",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "223.255.255.255",
            "240.0.0.0",
            "255.255.255.254",
            "10.96.0.1",
            "fd00::1",
        ] {
            assert_eq!(special(ip(plain)), None, "{plain}");
        }
    }

    /// Upstream: the ClusterIP allocator takes addresses only from
    /// `--service-cluster-ip-range`; `ValidateService`'s `validateClusterIPs`.
    #[test]
    fn cluster_ips_are_neither_special_nor_outside_the_service_cidrs() {
        let open = Rules::default();
        assert_eq!(code(cluster_ip("f", ip("10.200.0.1"), &open)), None);
        assert_eq!(
            code(cluster_ip("f", ip("127.0.0.1"), &open)),
            Some(ProblemCode::ReservedAddress)
        );
        let ranged = Rules {
            service_cidrs: vec!["10.96.0.0/12".parse::<Cidr>().unwrap()],
            ..Rules::default()
        };
        assert_eq!(code(cluster_ip("f", ip("10.111.255.255"), &ranged)), None);
        assert_eq!(
            code(cluster_ip("f", ip("10.112.0.0"), &ranged)),
            Some(ProblemCode::OutsideServiceCidr)
        );
        // Special before range: the reason says what is dangerous.
        assert_eq!(
            code(cluster_ip("f", ip("0.0.0.0"), &ranged)),
            Some(ProblemCode::ReservedAddress)
        );
    }

    /// Upstream: `ValidateService` runs `ValidateNonSpecialIP` on each
    /// externalIP; DenyServiceExternalIPs / externalip-webhook restrict
    /// them; kube-proxy serves one that is a node address (CVE-2020-8554).
    #[test]
    fn external_ips_are_checked_restricted_and_warned_about() {
        let node = node("node-a");
        let open = Rules::default();
        assert_eq!(
            code(external_ip("f", ip("203.0.113.9"), &open, &node)),
            None
        );
        assert_eq!(
            code(external_ip("f", ip("169.254.169.254"), &open, &node)),
            Some(ProblemCode::ReservedAddress)
        );
        let own = external_ip("f", ip("192.168.1.10"), &open, &node);
        assert!(
            matches!(own, Verdict::Warn(ProblemCode::ExternalIpIsNodeAddress, _)),
            "a node address is served with a warning: {own:?}"
        );
        let restricted = Rules {
            allowed_external_ip_cidrs: vec!["198.51.100.0/24".parse().unwrap()],
            ..Rules::default()
        };
        assert_eq!(
            code(external_ip("f", ip("198.51.100.200"), &restricted, &node)),
            None
        );
        assert_eq!(
            code(external_ip("f", ip("203.0.113.9"), &restricted, &node)),
            Some(ProblemCode::ExternalIpNotAllowed)
        );
        assert_eq!(
            code(external_ip("f", ip("192.168.1.10"), &restricted, &node)),
            Some(ProblemCode::ExternalIpNotAllowed),
            "outside the allowed ranges, even the node's own address is refused"
        );
    }

    /// Upstream: discovery validation runs `ValidateNonSpecialIP` on every
    /// endpoint address; a node's own address (hostNetwork pods) is fine.
    #[test]
    fn endpoints_may_be_node_addresses_but_not_special_ones() {
        assert_eq!(code(endpoint("f", ip("192.168.1.10"))), None);
        assert_eq!(
            code(endpoint("f", ip("127.0.0.1"))),
            Some(ProblemCode::ReservedAddress)
        );
        assert_eq!(
            code(load_balancer_ip("f", ip("0.0.0.0"))),
            Some(ProblemCode::ReservedAddress)
        );
    }
}
