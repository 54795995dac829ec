//! Map names, sizes, keys and values.
//!
//! Names carry a layout version: a change to any key or value below gets a
//! new name (`..._v2`), and the agent migrates the pinned `_v1` map instead of
//! silently reinterpreting it.

use bytemuck::{Pod, Zeroable};

/// Frontends: `Frontend4Key -> FrontendValue` (hash).
pub const FRONTENDS4: &str = "lb_fe4_v1";
/// Backends: backend id (`u32`) -> `Backend4` (hash).
pub const BACKENDS4: &str = "lb_be4_v1";
/// Maglev tables, flattened: index `table_id * MAGLEV_TABLE_SIZE + slot`
/// -> backend id (`u32`) (array).
pub const MAGLEV: &str = "lb_maglev_v1";
/// Connection table for packet hooks: `Ct4Key -> Ct4Value` (LRU hash).
pub const CT4: &str = "lb_ct4_v1";
/// Reverse translation for socket hooks: `SockRevNat4Key -> SockRevNat4Value` (LRU hash).
pub const SOCK_REVNAT4: &str = "lb_sock_rnat4_v1";
/// Per-CPU counters indexed by [`crate::reason::Reason`] (per-CPU array of `u64`).
pub const STATS: &str = "lb_stats_v1";

/// Every pinned map, for the agent's pin directory checks.
pub const ALL_MAPS: [&str; 6] = [FRONTENDS4, BACKENDS4, MAGLEV, CT4, SOCK_REVNAT4, STATS];

/// Slots in one Maglev table. Prime, as Maglev requires, and large against
/// the backend count of a typical Service (spread error stays under ~1%
/// up to ~100 backends).
pub const MAGLEV_TABLE_SIZE: u32 = 1021;
/// Maglev tables the kernel can hold by default (the agent can raise it at
/// load time). Tables are shared between frontends with the same backend set.
pub const DEFAULT_MAX_TABLES: u32 = 2048;
pub const MAX_FRONTENDS: u32 = 65_536;
pub const MAX_BACKENDS: u32 = 65_536;
pub const DEFAULT_CT_ENTRIES: u32 = 262_144;
pub const DEFAULT_SOCK_REVNAT_ENTRIES: u32 = 65_536;

/// IP protocol numbers as they appear in the IPv4 header.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;

/// Who sent the traffic a frontend entry applies to. Kubernetes treats the
/// two differently (externalTrafficPolicy vs internalTrafficPolicy), so each
/// frontend exists once per scope and may point at a different backend set.
pub const SCOPE_EXTERNAL: u8 = 0;
/// Traffic from the node itself or its pods, seen by the socket hooks.
pub const SCOPE_INTERNAL: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct Frontend4Key {
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    pub scope: u8,
}

/// With no backend, drop instead of reject: the policy is Local and this node
/// has no local endpoint (kube-proxy drops), as opposed to a Service with no
/// endpoints at all (kube-proxy rejects).
pub const FE_FLAG_EMPTY_DROP: u32 = 1 << 0;

/// Which frontend kind this is, for counters and `lb` output (bits 8..12).
pub const FE_KIND_SHIFT: u32 = 8;
pub const FE_KIND_MASK: u32 = 0xf << FE_KIND_SHIFT;
pub const FE_KIND_CLUSTER_IP: u32 = 1;
pub const FE_KIND_NODE_PORT: u32 = 2;
pub const FE_KIND_LOAD_BALANCER: u32 = 3;
pub const FE_KIND_EXTERNAL_IP: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FrontendValue {
    /// The Service port this frontend belongs to (agent-assigned).
    pub service_id: u32,
    /// Which Maglev table selects the backend; meaningless when
    /// `backend_count` is 0.
    pub table_id: u32,
    /// Backends in the table; 0 means reject or drop (see the flags).
    pub backend_count: u32,
    /// `FE_FLAG_*` and the `FE_KIND_*` field.
    pub flags: u32,
}

impl FrontendValue {
    #[inline(always)]
    pub const fn kind(&self) -> u32 {
        (self.flags & FE_KIND_MASK) >> FE_KIND_SHIFT
    }
}

/// The endpoint is terminating (chosen only as a fallback, see kube-proxy).
pub const BE_FLAG_TERMINATING: u8 = 1 << 0;
/// The endpoint lives on this node.
pub const BE_FLAG_LOCAL: u8 = 1 << 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct Backend4 {
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    /// `BE_FLAG_*`.
    pub flags: u8,
}

/// The connection-table direction of an entry.
pub const CT_DIR_ORIGINAL: u8 = 0;
pub const CT_DIR_REPLY: u8 = 1;

/// A connection-table key: the tuple exactly as packets carry it.
/// Original entries are keyed by client -> frontend, reply entries by
/// backend -> client.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct Ct4Key {
    pub src_addr_be: u32,
    pub dst_addr_be: u32,
    pub src_port_be: u16,
    pub dst_port_be: u16,
    pub proto: u8,
    pub dir: u8,
    pub _pad: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Ct4Value {
    /// Original entry: the backend to rewrite the destination to.
    /// Reply entry: the frontend to rewrite the source back to.
    pub nat_addr_be: u32,
    pub nat_port_be: u16,
    pub _pad: u16,
    pub backend_id: u32,
    pub service_id: u32,
    /// `bpf_ktime_get_ns()` when the flow was created and last seen.
    pub created_ns: u64,
    pub last_seen_ns: u64,
}

/// Socket-hook reverse translation: which frontend a socket meant when it
/// was connected (or sent) to a backend. Keyed by socket cookie, so
/// `getpeername()` and `recvmsg()` answer with the frontend address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct SockRevNat4Key {
    pub cookie: u64,
    pub backend_addr_be: u32,
    pub backend_port_be: u16,
    pub _pad: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct SockRevNat4Value {
    pub frontend_addr_be: u32,
    pub frontend_port_be: u16,
    pub _pad: u16,
    pub service_id: u32,
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all of these are repr(C), bytemuck Pod (no padding, any bit
    // pattern valid), which is exactly what aya::Pod requires.
    unsafe impl aya::Pod for Frontend4Key {}
    unsafe impl aya::Pod for FrontendValue {}
    unsafe impl aya::Pod for Backend4 {}
    unsafe impl aya::Pod for Ct4Key {}
    unsafe impl aya::Pod for Ct4Value {}
    unsafe impl aya::Pod for SockRevNat4Key {}
    unsafe impl aya::Pod for SockRevNat4Value {}
}

// The layouts are the contract: a size change must be a deliberate, versioned one.
const _: () = assert!(size_of::<Frontend4Key>() == 8);
const _: () = assert!(size_of::<FrontendValue>() == 16);
const _: () = assert!(size_of::<Backend4>() == 8);
const _: () = assert!(size_of::<Ct4Key>() == 16);
const _: () = assert!(size_of::<Ct4Value>() == 32);
const _: () = assert!(size_of::<SockRevNat4Key>() == 16);
const _: () = assert!(size_of::<SockRevNat4Value>() == 12);
