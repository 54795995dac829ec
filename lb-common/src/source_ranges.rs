//! loadBalancerSourceRanges: the map contract.
//!
//! kube-proxy sends a LoadBalancer IP's new connections through a firewall
//! chain (nftables `firewall-...`, iptables `KUBE-FW-...`) that drops every
//! source outside the Service's ranges. Here one LPM trie holds, per
//! Service port, the allowed prefixes: the key is the Service port's id
//! (all 32 bits always matched) followed by the source address, so one
//! lookup with the full 64 bits answers "is this source inside a range of
//! this Service port".
//!
//! Only frontends with `FE_FLAG_SOURCE_RANGES` consult it (LoadBalancer
//! IPs whose Service has ranges); NodePorts and ClusterIPs of the same
//! Service never do, as under kube-proxy.

use bytemuck::{Pod, Zeroable};

use crate::FrontendValue;

/// Allowed sources: `lpm Key<SourceRange4> -> u8` (1: allow) (LPM trie).
pub const SOURCE_RANGES4: &str = "lb_src_ranges4_v1";
/// Prefixes the trie holds (every range of every Service port).
pub const MAX_SOURCE_RANGES: u32 = 65_536;

/// The frontend's Service port has source ranges: a new connection's
/// source must be inside one.
pub const FE_FLAG_SOURCE_RANGES: u32 = 1 << 1;

/// The value of every entry: the prefix is allowed.
pub const SOURCE_RANGE_ALLOW: u8 = 1;

/// Bits of the key that are the Service port id: always matched whole.
pub const SOURCE_RANGE_ID_BITS: u32 = 32;

/// The data part of a trie key. The LPM trie matches bytes from the
/// start, so `service_id` (any byte order, as long as both sides agree:
/// it is always matched whole) comes first and the address, in network
/// order as the packet carries it, after.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct SourceRange4 {
    pub service_id: u32,
    pub addr_be: u32,
}

impl FrontendValue {
    /// Whether new connections to this frontend are filtered by source.
    #[inline(always)]
    pub const fn has_source_ranges(&self) -> bool {
        self.flags & FE_FLAG_SOURCE_RANGES != 0
    }
}

/// `TraceRecord.steps`: the source was inside a range of the Service port.
pub const TRACE_SOURCE_RANGE_ALLOWED: u32 = 1 << 14;
/// `TraceRecord.steps`: the source was outside every range: dropped.
pub const TRACE_SOURCE_RANGE_DENIED: u32 = 1 << 15;

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), bytemuck Pod (no padding, any bit pattern valid).
    unsafe impl aya::Pod for SourceRange4 {}
}

const _: () = assert!(size_of::<SourceRange4>() == 8);
const _: () = assert!(FE_FLAG_SOURCE_RANGES & crate::FE_FLAG_EMPTY_DROP == 0);
const _: () = assert!(FE_FLAG_SOURCE_RANGES & crate::FE_KIND_MASK == 0);
const _: () = assert!(FE_FLAG_SOURCE_RANGES & crate::FE_AFFINITY_MASK == 0);
