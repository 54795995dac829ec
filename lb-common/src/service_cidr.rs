//! Service CIDRs (`--service-cidr`): the map contract and the rule.
//!
//! kube-proxy's nftables mode sends new connections that no Service
//! translated (its DNAT runs first, so only unmatched destinations remain)
//! through its `cluster-ips-check` chain, from `filter-forward` (pods, and
//! traffic routed in from outside) and `filter-output` (node processes):
//!
//! ```text
//! ip daddr @cluster-ips reject        comment "Reject traffic to invalid ports of ClusterIPs"
//! ip daddr { <service CIDRs> } drop   comment "Drop traffic to unallocated ClusterIPs"
//! ```
//!
//! The first rule is always there (`cluster-ips` holds every Service's
//! ClusterIP); the second only when service CIDRs are known. Here both are
//! checked after the frontend lookup missed: one hash of the allocated
//! ClusterIPs (`CLUSTER_IPS4`, written by the plan from the ClusterIP
//! frontends) and one LPM trie of the CIDRs (`SERVICE_CIDRS4`, empty
//! without `--service-cidr`).

use crate::reason::Reason;

/// Allocated ClusterIPs: address (network order) -> `CLUSTER_IP_ALLOCATED`
/// (hash).
pub const CLUSTER_IPS4: &str = "lb_cluster_ip4_v1";
/// Service CIDRs: `lpm Key<u32>` (the address in network order) ->
/// `SERVICE_CIDR_MEMBER` (LPM trie).
pub const SERVICE_CIDRS4: &str = "lb_svc_cidr4_v1";

/// ClusterIPs the hash holds: one per Service at most.
pub const MAX_CLUSTER_IPS: u32 = crate::MAX_SERVICES;
/// CIDRs the trie holds (`--service-cidr` is repeatable; clusters have a
/// handful).
pub const MAX_SERVICE_CIDRS: u32 = 256;

/// The value of every entry of both maps.
pub const CLUSTER_IP_ALLOCATED: u8 = 1;
pub const SERVICE_CIDR_MEMBER: u8 = 1;

/// What happens to a new connection that matched no frontend, given
/// whether its destination is an allocated ClusterIP and whether it lies
/// inside a service CIDR (asked only when it is not allocated): `None`,
/// it passes untouched.
#[inline(always)]
pub fn unmatched_verdict(allocated: bool, inside_cidr: impl FnOnce() -> bool) -> Option<Reason> {
    if allocated {
        Some(Reason::RejectClusterIpPort)
    } else if inside_cidr() {
        Some(Reason::DropUnallocatedClusterIp)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kube-proxy's cluster-ips-check: the reject rule first, the drop
    /// rule after it, anything else untouched.
    #[test]
    fn reject_before_drop_and_the_rest_passes() {
        assert_eq!(
            unmatched_verdict(true, || unreachable!("an allocated ClusterIP asks no CIDR")),
            Some(Reason::RejectClusterIpPort)
        );
        assert_eq!(
            unmatched_verdict(false, || true),
            Some(Reason::DropUnallocatedClusterIp)
        );
        assert_eq!(unmatched_verdict(false, || false), None);
    }
}
