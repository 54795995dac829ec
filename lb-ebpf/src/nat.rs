//! Address and port rewrites with their checksum updates, for every hook
//! that translates packets: either end of an XDP packet (forward
//! translation and masquerade, what `lb trace` shows for the socket hooks,
//! masqueraded replies) and of an skb (reverse translation on tc).
//!
//! XDP updates checksums incrementally (`lb_common::csum`); tc the IPv4
//! header's likewise (never offloaded), the transport's with the kernel's
//! helpers, which unlike an incremental update also handle
//! CHECKSUM_PARTIAL skbs (locally generated TCP).

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use lb_common::{Endpoint4, PROTO_SCTP, PROTO_UDP, csum, reason::Reason};

use crate::{
    parse::{
        ETH_HLEN, IPV4_CSUM_OFF, IPV4_MIN_HLEN, IPV4_SADDR_OFF, Ipv4Hdr, Ports, SkbPacket,
        XdpPacket, ptr_at,
    },
    sctp::{self, PortEnd},
};

/// The destination address' offset in the IPv4 header.
const IPV4_DADDR_OFF: usize = 16;

/// Rewrites the destination of a parsed XDP packet from `from` (its
/// current destination) to `to`.
#[inline(always)]
pub fn rewrite_xdp_destination(pkt: &XdpPacket, from: Endpoint4, to: Endpoint4) {
    // SAFETY: bounds-checked pointer from `parse::xdp_ipv4`.
    unsafe {
        rewrite_xdp(
            pkt,
            &raw mut (*pkt.ip).daddr_be,
            PortEnd::Destination,
            from,
            to,
        )
    }
}

/// Rewrites the source of a parsed XDP packet from `from` (its current
/// source) to `to` (masquerade, and the frontend of a masqueraded reply).
#[inline(always)]
pub fn rewrite_xdp_source(pkt: &XdpPacket, from: Endpoint4, to: Endpoint4) {
    // SAFETY: bounds-checked pointer from `parse::xdp_ipv4`.
    unsafe { rewrite_xdp(pkt, &raw mut (*pkt.ip).saddr_be, PortEnd::Source, from, to) }
}

/// Rewrites one end of a parsed XDP packet, `from` to `to`: `addr` points
/// at its address in the IPv4 header, `end` says which port of the
/// transport header goes with it; both checksums are updated
/// incrementally. A later fragment has no transport header: its address
/// and IP checksum only (its first fragment's transport checksum covers
/// the whole datagram, and got the update).
///
/// # Safety
/// `addr` points into `pkt`'s bounds-checked IPv4 header.
#[inline(always)]
unsafe fn rewrite_xdp(
    pkt: &XdpPacket,
    addr: *mut u32,
    end: PortEnd,
    from: Endpoint4,
    to: Endpoint4,
) {
    // SAFETY: the caller's pointer, and `parse::xdp_ipv4`'s.
    unsafe {
        let ip = pkt.ip;
        (*ip).check = csum::replace4((*ip).check, from.addr_be, to.addr_be);
        *addr = to.addr_be;
        let Some(l4) = &pkt.l4 else {
            return;
        };
        let port = match end {
            PortEnd::Source => &raw mut (*l4.ports).src_be,
            PortEnd::Destination => &raw mut (*l4.ports).dst_be,
        };
        if pkt.proto == PROTO_SCTP {
            // CRC32c, over the SCTP packet only: the port, not the address.
            sctp::update_xdp_crc(pkt, l4, end, from, to);
            *port = to.port_be;
            return;
        }
        *l4.csum = csum::l4_after_rewrite(
            pkt.proto,
            *l4.csum,
            from.addr_be,
            to.addr_be,
            from.port_be,
            to.port_be,
        );
        *port = to.port_be;
    }
}

/// Rewrites the source of a parsed skb to `to`. A failed helper call
/// (`DropRewriteFailed`) may leave the packet half rewritten: drop it.
#[inline(always)]
pub fn rewrite_skb_source(ctx: &TcContext, pkt: &SkbPacket, to: Endpoint4) -> Result<(), Reason> {
    rewrite_skb(
        ctx,
        pkt,
        PortEnd::Source,
        pkt.flow.src,
        to,
        IPV4_SADDR_OFF,
        0,
    )
}

/// Rewrites the destination of a parsed skb (as parsed: a source rewritten
/// since is left alone) to `to`; failures as [`rewrite_skb_source`].
#[inline(always)]
pub fn rewrite_skb_destination(
    ctx: &TcContext,
    pkt: &SkbPacket,
    to: Endpoint4,
) -> Result<(), Reason> {
    rewrite_skb(
        ctx,
        pkt,
        PortEnd::Destination,
        pkt.flow.dst,
        to,
        IPV4_DADDR_OFF,
        2,
    )
}

/// Rewrites one end of a parsed skb, `from` to `to`: the address at
/// `addr_off` in the IPv4 header and the port at `port_off` in the
/// transport header, with both checksums.
///
/// A packet whose 20-byte IPv4 header and ports lie in the linear part
/// (nearly every reply) gets its address, IP checksum and port in one
/// store of those 24 bytes; anything else one helper call each. Each is a
/// call, and the returns cost most on CPUs that mitigate return
/// speculation.
#[inline(always)]
fn rewrite_skb(
    ctx: &TcContext,
    pkt: &SkbPacket,
    end: PortEnd,
    from: Endpoint4,
    to: Endpoint4,
    addr_off: usize,
    port_off: usize,
) -> Result<(), Reason> {
    let fail = |_| Reason::DropRewriteFailed;
    if !pkt.l4 {
        // A later fragment: addresses only (see `rewrite_xdp`).
        ctx.l3_csum_replace(
            ETH_HLEN + IPV4_CSUM_OFF,
            from.addr_be as u64,
            to.addr_be as u64,
            4,
        )
        .map_err(fail)?;
        return ctx.store(ETH_HLEN + addr_off, &to.addr_be, 0).map_err(fail);
    }
    // Read before the checksum helpers, which move the packet's pointers.
    let head = linear_head(ctx, pkt);
    if pkt.flow.proto == PROTO_SCTP {
        // CRC32c, over the SCTP packet only: the ports, not the address.
        sctp::update_skb_crc(ctx, pkt, end, from, to)?;
    } else {
        skb_l4_checksum(ctx, pkt, from, to)?;
    }
    if let Some(mut head) = head {
        head.ip.check = csum::replace4(head.ip.check, from.addr_be, to.addr_be);
        match end {
            PortEnd::Source => {
                head.ip.saddr_be = to.addr_be;
                head.ports.src_be = to.port_be;
            }
            PortEnd::Destination => {
                head.ip.daddr_be = to.addr_be;
                head.ports.dst_be = to.port_be;
            }
        }
        return ctx.store(ETH_HLEN, &head, 0).map_err(fail);
    }
    ctx.l3_csum_replace(
        ETH_HLEN + IPV4_CSUM_OFF,
        from.addr_be as u64,
        to.addr_be as u64,
        4,
    )
    .map_err(fail)?;
    ctx.store(ETH_HLEN + addr_off, &to.addr_be, 0)
        .map_err(fail)?;
    ctx.store(pkt.l4_off + port_off, &to.port_be, 0)
        .map_err(fail)?;
    Ok(())
}

/// A 20-byte IPv4 header and the ports right after it.
#[derive(Clone, Copy)]
#[repr(C)]
struct Head {
    ip: Ipv4Hdr,
    ports: Ports,
}

/// The packet's [`Head`] as it is now, when its IPv4 header has no options
/// and both lie in the linear part.
#[inline(always)]
fn linear_head(ctx: &TcContext, pkt: &SkbPacket) -> Option<Head> {
    if pkt.l4_off != ETH_HLEN + IPV4_MIN_HLEN {
        return None;
    }
    let head: *const Head = ptr_at(ctx.data(), ctx.data_end(), ETH_HLEN)?;
    // SAFETY: bounds-checked above.
    Some(unsafe { *head })
}

/// The transport checksum's update for a new address and port, by the
/// kernel's helpers (they handle CHECKSUM_PARTIAL skbs): nothing for a UDP
/// datagram without a checksum.
#[inline(always)]
fn skb_l4_checksum(
    ctx: &TcContext,
    pkt: &SkbPacket,
    from: Endpoint4,
    to: Endpoint4,
) -> Result<(), Reason> {
    let fail = |_| Reason::DropRewriteFailed;
    let mut l4_flags = 0u64;
    if pkt.flow.proto == PROTO_UDP {
        // Zero means "no checksum"; MARK_MANGLED_0 keeps it so and turns a
        // computed zero into 0xffff.
        l4_flags = BPF_F_MARK_MANGLED_0 as u64;
        let check: u16 = ctx.load(pkt.csum_off).map_err(fail)?;
        if check == 0 {
            return Ok(());
        }
    }
    ctx.l4_csum_replace(
        pkt.csum_off,
        from.addr_be as u64,
        to.addr_be as u64,
        l4_flags | BPF_F_PSEUDO_HDR as u64 | 4,
    )
    .map_err(fail)?;
    ctx.l4_csum_replace(
        pkt.csum_off,
        from.port_be as u64,
        to.port_be as u64,
        l4_flags | 2,
    )
    .map_err(fail)?;
    Ok(())
}
