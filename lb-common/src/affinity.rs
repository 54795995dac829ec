//! Session affinity (`sessionAffinity: ClientIP`): the map contract.
//!
//! kube-proxy's iptables mode remembers, per endpoint, the client
//! addresses that chose it (`-m recent --name KUBE-SEP-... --set`) and sends
//! a new connection from a remembered client to that endpoint while it was
//! last remembered less than `timeoutSeconds` ago (`--rcheck --seconds`).
//! Here one LRU entry per (service port, endpoint set, client) holds the
//! backend and when a connection last chose it, in whole seconds of
//! `bpf_ktime_get_ns()`.
//!
//! The timeout travels in the frontend value's flags (bits 12..32; 0 means
//! no affinity), so the frontend layout, and its `_v1` name, stay as they
//! are: entries written before affinity existed read as "no affinity".

use bytemuck::{Pod, Zeroable};

use crate::FrontendValue;

/// Affinity entries: `Affinity4Key -> Affinity4Value` (LRU hash).
pub const AFFINITY4: &str = "lb_affinity4_v1";
pub const DEFAULT_AFFINITY_ENTRIES: u32 = 65_536;

/// The affinity timeout in seconds, in the frontend flags (0: none).
pub const FE_AFFINITY_SHIFT: u32 = 12;
pub const FE_AFFINITY_MASK: u32 = 0xf_ffff << FE_AFFINITY_SHIFT;
/// The largest timeout the flags hold (the API allows at most 86400).
pub const MAX_AFFINITY_TIMEOUT_S: u32 = 0xf_ffff;

/// `Affinity4Key.client_kind`: the client is an IPv4 source address
/// (packet hooks: the client's own address, as kube-proxy keys it).
pub const AFFINITY_CLIENT_ADDR: u8 = 0;
/// The client is a network namespace (socket hooks: the cookie of the
/// connecting socket's namespace; a pod's namespace holds the pod's one
/// address, so it identifies the same client the pod's address would).
pub const AFFINITY_CLIENT_NETNS: u8 = 1;

/// `Affinity4Key.set`: the frontend uses the Service port's cluster-wide
/// endpoints, or this node's only (policy Local): kube-proxy checks the
/// remembered clients per chain (KUBE-SVC or KUBE-SVL), so a client
/// remembered for a remote endpoint is not sent there by a Local frontend.
pub const AFFINITY_SET_CLUSTER: u8 = 0;
pub const AFFINITY_SET_LOCAL: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct Affinity4Key {
    pub service_id: u32,
    /// `AFFINITY_SET_*`.
    pub set: u8,
    /// `AFFINITY_CLIENT_*`.
    pub client_kind: u8,
    pub _pad: [u8; 2],
    /// An IPv4 address in network order (in the low 32 bits) or a netns
    /// cookie.
    pub client: u64,
}

impl Affinity4Key {
    #[inline(always)]
    pub const fn new(fe: &FrontendValue, client_kind: u8, client: u64) -> Affinity4Key {
        let set = if fe.flags & crate::FE_FLAG_EMPTY_DROP != 0 {
            AFFINITY_SET_LOCAL
        } else {
            AFFINITY_SET_CLUSTER
        };
        Affinity4Key {
            service_id: fe.service_id,
            set,
            client_kind,
            _pad: [0; 2],
            client,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Affinity4Value {
    pub backend_id: u32,
    /// Whole seconds of `bpf_ktime_get_ns()` when a new connection last
    /// chose the backend through this entry (kube-proxy's `--set`).
    pub last_used_s: u32,
}

impl FrontendValue {
    /// The ClientIP affinity timeout in seconds; 0: no affinity.
    #[inline(always)]
    pub const fn affinity_timeout_s(&self) -> u32 {
        (self.flags & FE_AFFINITY_MASK) >> FE_AFFINITY_SHIFT
    }
}

/// `TraceRecord.steps`: a remembered client decided the backend.
pub const TRACE_AFFINITY_HIT: u32 = 1 << 5;
/// `TraceRecord.steps`: affinity is on and the choice is remembered.
pub const TRACE_AFFINITY_SET: u32 = 1 << 6;

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), bytemuck Pod (no padding, any bit pattern valid).
    unsafe impl aya::Pod for Affinity4Key {}
    unsafe impl aya::Pod for Affinity4Value {}
}

const _: () = assert!(size_of::<Affinity4Key>() == 16);
const _: () = assert!(size_of::<Affinity4Value>() == 8);
const _: () = assert!(FE_AFFINITY_MASK & crate::FE_KIND_MASK == 0);
const _: () = assert!(FE_AFFINITY_MASK & crate::FE_FLAG_EMPTY_DROP == 0);
