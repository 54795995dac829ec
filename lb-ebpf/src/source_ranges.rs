//! loadBalancerSourceRanges on every hook: a new connection to a frontend
//! whose Service port has ranges must come from inside one, else it is
//! dropped (`drop_source_range`), as kube-proxy's firewall chain drops it.
//! Checked after the frontend lookup and before anything is chosen, so a
//! refused source leaves no connection or affinity entry behind; only
//! frontends with `FE_FLAG_SOURCE_RANGES` pay for the lookup.
//!
//! The socket hooks run at `connect()`/`sendmsg()`, before the kernel
//! picks an unbound socket's source by route (most pods' and node
//! processes' sockets are unbound). Such a socket is translated, and its
//! first packet toward the backend is checked where the source is known:
//! `lb_sock_egress` (cgroup skb egress, [`check_routed_source`]). A socket
//! outside every range has its packets to the backend dropped, so its
//! connect() times out as under kube-proxy's drop; inside, the pending
//! check is removed and later packets pay one storage lookup that misses.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, bpf_sock},
    btf_maps::SkStorage,
    helpers::generated::{bpf_sk_storage_delete, bpf_sk_storage_get},
    macros::{btf_map, map},
    maps::{LpmTrie, lpm_trie::Key},
    programs::{SkBuffContext, SockAddrContext},
};
use lb_common::{
    Endpoint4, FrontendValue, MAX_SOURCE_RANGES, SOURCE_RANGE_ID_BITS, SourceRange4,
    TRACE_SOURCE_RANGE_ALLOWED, TRACE_SOURCE_RANGE_DENIED, reason::Reason,
};

use crate::trace;

/// (service port id, source prefix) -> allow.
#[map(name = "lb_src_ranges4_v1")]
pub static SOURCE_RANGES4: LpmTrie<SourceRange4, u8> = LpmTrie::pinned(MAX_SOURCE_RANGES, 0);

const _: () = assert!(crate::maps::str_eq(
    "lb_src_ranges4_v1",
    lb_common::SOURCE_RANGES4
));

/// A socket translated to a frontend with source ranges before its source
/// was known: the Service port and the backend its packets now go to.
/// Per socket, freed with it. Not pinned: a socket that connects in the
/// instant an upgrade swaps the programs, and sends its first packet after,
/// goes unchecked (the new program reads the new map).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct PendingCheck {
    service_id: u32,
    backend_addr_be: u32,
    backend_port_be: u16,
    proto: u8,
    _pad: u8,
}

#[btf_map(name = "lb_src_pending")]
static PENDING_CHECKS: SkStorage<PendingCheck> = SkStorage::new();

/// Whether `src_be` (network order) may open a connection to `fe`.
#[inline(always)]
pub fn check(fe: &FrontendValue, src_be: u32) -> Result<(), Reason> {
    if !fe.has_source_ranges() {
        return Ok(());
    }
    check_service(fe.service_id, src_be)
}

/// What the socket hooks do about a frontend's source ranges.
pub enum SocketCheck {
    /// Nothing to check, or the bound source is inside a range.
    Passed,
    /// The socket is unbound: its packets are checked at egress.
    AtFirstPacket,
}

/// The socket hooks' check: `bound_be` is the socket's bound address (0:
/// unbound, the kernel picks it after the hook).
#[inline(always)]
pub fn check_socket(
    fe: &FrontendValue,
    bound_be: impl FnOnce() -> u32,
) -> Result<SocketCheck, Reason> {
    if !fe.has_source_ranges() {
        return Ok(SocketCheck::Passed);
    }
    match bound_be() {
        0 => Ok(SocketCheck::AtFirstPacket),
        source => check_service(fe.service_id, source).map(|()| SocketCheck::Passed),
    }
}

/// Marks the hook's socket for a check of its source at its first packet
/// to `backend`. `Err` when the kernel refused the memory: the caller
/// refuses the connection (counted as `drop_source_range`: its source
/// could not be checked) rather than let it through unchecked.
#[inline(always)]
pub fn check_at_first_packet(
    ctx: &SockAddrContext,
    service_id: u32,
    backend: Endpoint4,
    proto: u8,
) -> Result<(), Reason> {
    if trace::dry_run() {
        return Ok(());
    }
    let mut pending = PendingCheck {
        service_id,
        backend_addr_be: backend.addr_be,
        backend_port_be: backend.port_be,
        proto,
        _pad: 0,
    };
    let slot = PENDING_CHECKS.get_or_insert_ptr_mut(ctx, Some(&mut pending));
    if slot.is_null() {
        return Err(Reason::DropSourceRange);
    }
    // SAFETY: a valid storage pointer for this socket; an existing entry
    // (an earlier sendmsg() of the socket) is overwritten.
    unsafe { *slot = pending };
    Ok(())
}

/// cgroup skb egress: a packet of a socket with a pending check, toward
/// the backend it was translated to, is allowed only from inside a range.
/// `Err(service id)`: drop it. Every other packet passes after one storage
/// lookup.
#[inline(always)]
pub fn check_routed_source(ctx: &SkBuffContext) -> Result<(), u32> {
    // SAFETY: the context the kernel passed us.
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: as above.
    let sk: *mut bpf_sock = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return Ok(());
    }
    let map = core::ptr::from_ref(&PENDING_CHECKS).cast_mut().cast();
    // SAFETY: a plain helper call; `sk` was checked for null.
    let pending = unsafe { bpf_sk_storage_get(map, sk.cast(), core::ptr::null_mut(), 0) }
        .cast::<PendingCheck>();
    if pending.is_null() {
        return Ok(());
    }
    // SAFETY: a valid storage pointer; copied out at once.
    let pending = unsafe { *pending };
    let Some(packet) = IpHeader::read(ctx) else {
        return Ok(());
    };
    if packet.dst_be != pending.backend_addr_be
        || packet.proto != pending.proto
        || packet.dst_port_be != pending.backend_port_be
    {
        return Ok(());
    }
    check_service(pending.service_id, packet.src_be).map_err(|_| pending.service_id)?;
    // Checked once: later packets of the socket pass.
    // SAFETY: a plain helper call on the same socket.
    unsafe { bpf_sk_storage_delete(map, sk.cast()) };
    Ok(())
}

/// What egress needs of a packet: cgroup skb programs see it from its IPv4
/// header on.
struct IpHeader {
    src_be: u32,
    dst_be: u32,
    proto: u8,
    dst_port_be: u16,
}

impl IpHeader {
    #[inline(always)]
    fn read(ctx: &SkBuffContext) -> Option<Self> {
        let first: u8 = ctx.load(0).ok()?;
        if first >> 4 != 4 {
            return None;
        }
        let header_len = usize::from(first & 0x0f) * 4;
        Some(Self {
            proto: ctx.load(9).ok()?,
            src_be: ctx.load(12).ok()?,
            dst_be: ctx.load(16).ok()?,
            // Both TCP and UDP carry the destination port at offset 2.
            dst_port_be: ctx.load(header_len + 2).ok()?,
        })
    }
}

#[inline(always)]
fn check_service(service_id: u32, src_be: u32) -> Result<(), Reason> {
    let key = Key::new(
        SOURCE_RANGE_ID_BITS + 32,
        SourceRange4 {
            service_id,
            addr_be: src_be,
        },
    );
    if SOURCE_RANGES4.get(&key).is_some() {
        trace::step(TRACE_SOURCE_RANGE_ALLOWED);
        Ok(())
    } else {
        trace::step(TRACE_SOURCE_RANGE_DENIED);
        Err(Reason::DropSourceRange)
    }
}
