//! `lb trace`'s contract with the datapath: what a traced packet's run is
//! given (`TraceRequest`, in the `lb_trace_req` map) and what it records
//! (`TraceRecord`, in `lb_trace`). Never pinned: each trace has its own.

use bytemuck::{Pod, Zeroable};

use crate::FrontendValue;

/// Where a traced packet enters.
pub const TRACE_ENTRY_EXTERNAL: u8 = 0;
/// From a process on the node (a pod or the node itself): the socket hooks.
pub const TRACE_ENTRY_SOCKET: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct TraceRequest {
    /// For `TRACE_ENTRY_SOCKET`: the socket cookie whose hash selects the
    /// backend, exactly as `connect4` would for that socket.
    pub cookie: u64,
    pub entry: u8,
    pub _pad: [u8; 7],
    /// For `TRACE_ENTRY_SOCKET`: the client's network namespace cookie,
    /// which session affinity remembers socket clients by.
    pub netns_cookie: u64,
}

/// `TraceRecord.steps` bits: which decisions the datapath took.
pub const TRACE_FRONTEND: u32 = 1 << 0;
/// The connection table decided (an established flow).
pub const TRACE_CONNECTION: u32 = 1 << 1;
/// The Maglev table decided (a new flow).
pub const TRACE_MAGLEV: u32 = 1 << 2;
/// A backend was found and the packet (or socket) would be translated.
pub const TRACE_BACKEND: u32 = 1 << 3;
/// Selection hashed the socket cookie (socket hooks), not the flow tuple.
pub const TRACE_SOCKET_HASH: u32 = 1 << 4;

/// What the datapath decided for one traced packet. Zeroed before each
/// trace; filled as decisions are taken.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct TraceRecord {
    /// `TRACE_*` bits.
    pub steps: u32,
    /// The final `reason::Reason`.
    pub reason: u32,
    /// The frontend found (valid with `TRACE_FRONTEND`).
    pub frontend: FrontendValue,
    /// The Maglev slot (valid with `TRACE_MAGLEV`).
    pub slot: u32,
    pub backend_id: u32,
    /// Where the packet or socket would be sent (valid with `TRACE_BACKEND`).
    pub nat_addr_be: u32,
    pub nat_port_be: u16,
    pub _pad: u16,
    /// The address a new connection's source is masqueraded to (valid with
    /// `snat::TRACE_MASQUERADE`).
    pub snat_addr_be: u32,
    /// The source port a masqueraded connection gets (valid with
    /// `snat::TRACE_SNAT_APPLIED`).
    pub snat_port_be: u16,
    pub _pad2: u16,
}

#[cfg(feature = "user")]
// SAFETY: repr(C), bytemuck Pod (no padding, any bit pattern valid), which
// is exactly what aya::Pod requires.
unsafe impl aya::Pod for TraceRequest {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for TraceRecord {}

// The layouts are the contract: a size change must be a deliberate one.
const _: () = assert!(size_of::<TraceRequest>() == 24);
const _: () = assert!(size_of::<TraceRecord>() == 48);
