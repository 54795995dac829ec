//! Service CIDRs on every hook (`lb_common::service_cidr`): a new
//! connection that matched no frontend, to an allocated ClusterIP, is
//! rejected (a port or protocol its Service does not expose); to another
//! address inside a `--service-cidr`, dropped. Asked only after the
//! frontend lookup missed, so translated traffic never pays for it.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LpmTrie, lpm_trie::Key},
};
use lb_common::{
    reason::Reason,
    service_cidr::{MAX_CLUSTER_IPS, MAX_SERVICE_CIDRS, unmatched_verdict},
};

/// Allocated ClusterIPs (network order) -> allocated.
#[map(name = "lb_cluster_ip4_v1")]
pub static CLUSTER_IPS4: HashMap<u32, u8> = HashMap::pinned(MAX_CLUSTER_IPS, 0);

/// Service CIDRs (network order) -> member.
#[map(name = "lb_svc_cidr4_v1")]
pub static SERVICE_CIDRS4: LpmTrie<u32, u8> = LpmTrie::pinned(MAX_SERVICE_CIDRS, 0);

const _: () = assert!(crate::maps::str_eq(
    "lb_cluster_ip4_v1",
    lb_common::service_cidr::CLUSTER_IPS4
));
const _: () = assert!(crate::maps::str_eq(
    "lb_svc_cidr4_v1",
    lb_common::service_cidr::SERVICE_CIDRS4
));

/// The verdict on a destination (network order) that is no frontend:
/// `None` passes it untouched.
#[inline(always)]
pub fn unmatched(dst_be: u32) -> Option<Reason> {
    unmatched_known(dst_be, allocated(dst_be))
}

/// Whether `dst_be` is an allocated ClusterIP (any Service's).
#[inline(always)]
pub fn allocated(dst_be: u32) -> bool {
    CLUSTER_IPS4.get_ptr(&dst_be).is_some()
}

/// [`unmatched`], where the caller already knows whether `dst_be` is
/// [`allocated`].
#[inline(always)]
pub fn unmatched_known(dst_be: u32, allocated: bool) -> Option<Reason> {
    unmatched_verdict(allocated, || {
        SERVICE_CIDRS4.get(&Key::new(32, dst_be)).is_some()
    })
}
