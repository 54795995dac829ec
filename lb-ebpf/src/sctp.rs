//! SCTP on the packet hooks: the common header's checksum and first chunk
//! (parsing), and the CRC32c update a port rewrite needs (translation).
//!
//! The CRC covers the SCTP packet only (no pseudo-header), so an address
//! rewrite leaves it as it is; a port rewrite updates it with
//! `lb_common::sctp::crc32c_after_port_rewrite`, which by CRC32c's
//! linearity needs only the old CRC, the packet's length and the ports:
//! no payload is read, so non-linear skbs and multi-buffer XDP frames of
//! any length are translated alike, and a packet whose CRC was wrong
//! before stays exactly as wrong (the receiver drops it, as it would have).
//!
//! A CRC left to be computed by the device (`CHECKSUM_PARTIAL` with SCTP
//! CRC offload) holds zero, and updating it would corrupt what the device
//! computes; no program can see that state, but it does not arise here:
//! the replies tc translates come from pods through veths, which offer no
//! SCTP CRC offload, so the pod's stack computed the CRC in full.

use aya_ebpf::programs::TcContext;
use lb_common::{
    Endpoint4,
    reason::Reason,
    sctp::{SCTP_CHUNK_TYPE_OFF, SCTP_CSUM_OFF, crc32c_after_port_rewrite},
};

use crate::parse::{ETH_HLEN, Ipv4Hdr, SkbPacket, XdpL4, XdpPacket};

pub use lb_common::sctp::SCTP_CSUM_OFF as CSUM_OFF;

/// The CRC32c's place (as the first of two `u16`s, all four bytes
/// bounds-checked) and the first chunk's type of the SCTP header at `l4`.
#[inline(always)]
pub fn xdp_header(l4: usize, data_end: usize) -> Result<(*mut u16, u8), Reason> {
    if l4 + SCTP_CSUM_OFF + 4 > data_end || l4 + SCTP_CHUNK_TYPE_OFF + 1 > data_end {
        return Err(Reason::PassMalformed);
    }
    let csum = (l4 + SCTP_CSUM_OFF) as *mut u16;
    // SAFETY: bounds-checked above.
    let first_chunk = unsafe { *((l4 + SCTP_CHUNK_TYPE_OFF) as *const u8) };
    Ok((csum, first_chunk))
}

/// The first chunk's type of the SCTP header at `l4_off` of an skb.
#[inline(always)]
pub fn skb_first_chunk(ctx: &TcContext, l4_off: usize) -> Result<u8, Reason> {
    ctx.load(l4_off + SCTP_CHUNK_TYPE_OFF)
        .map_err(|_| Reason::PassMalformed)
}

/// The SCTP packet's length: the IPv4 datagram's less its header.
#[inline(always)]
fn sctp_len(ip: &Ipv4Hdr) -> u32 {
    let hlen = u32::from(ip.ver_ihl & 0x0f) * 4;
    u32::from(u16::from_be(ip.tot_len_be)).saturating_sub(hlen)
}

/// Which port of a packet a rewrite changes.
#[derive(Clone, Copy)]
pub enum PortEnd {
    Source,
    Destination,
}

/// The header's ports (source, destination) before and after `end` goes
/// from `from` to `to`, the other port as `ports` has it. By CRC32c's
/// linearity only what changes counts: the other port cancels out, so a
/// stale value of it (an skb's end rewritten since it was parsed) is fine.
#[inline(always)]
fn ports_around(ports: (u16, u16), end: PortEnd, from: u16, to: u16) -> ((u16, u16), (u16, u16)) {
    match end {
        PortEnd::Source => ((from, ports.1), (to, ports.1)),
        PortEnd::Destination => ((ports.0, from), (ports.0, to)),
    }
}

/// Updates the CRC32c of a parsed XDP packet whose `end` port goes from
/// `from` to `to` (call before the port is written; the address needs
/// nothing).
#[inline(always)]
pub fn update_xdp_crc(pkt: &XdpPacket, l4: &XdpL4, end: PortEnd, from: Endpoint4, to: Endpoint4) {
    if from.port_be == to.port_be {
        return;
    }
    // SAFETY: bounds-checked pointers from `parse::xdp_ipv4`: all four
    // bytes of the CRC (`xdp_header`).
    unsafe {
        let (ip, ports) = (*pkt.ip, pkt.ports);
        let (old, new) = ports_around((ports.src_be, ports.dst_be), end, from.port_be, to.port_be);
        let crc = core::ptr::read_unaligned(l4.csum.cast::<u32>());
        let crc = crc_after_port_rewrite(crc, sctp_len(&ip), old, new);
        core::ptr::write_unaligned(l4.csum.cast::<u32>(), crc);
    }
}

/// Updates the CRC32c of a parsed skb whose `end` port goes from `from`
/// to `to` (the ports are written by the caller).
#[inline(always)]
pub fn update_skb_crc(
    ctx: &TcContext,
    pkt: &SkbPacket,
    end: PortEnd,
    from: Endpoint4,
    to: Endpoint4,
) -> Result<(), Reason> {
    if from.port_be == to.port_be {
        return Ok(());
    }
    let fail = |_| Reason::DropRewriteFailed;
    let hdr: Ipv4Hdr = ctx.load(ETH_HLEN).map_err(fail)?;
    let crc: u32 = ctx.load(pkt.csum_off).map_err(fail)?;
    let parsed = (pkt.flow.src.port_be, pkt.flow.dst.port_be);
    let (old, new) = ports_around(parsed, end, from.port_be, to.port_be);
    let crc = crc_after_port_rewrite(crc, sctp_len(&hdr), old, new);
    ctx.store(pkt.csum_off, &crc, 0).map_err(fail)
}

/// `crc32c_after_port_rewrite` through the global function.
#[inline(always)]
fn crc_after_port_rewrite(crc: u32, len: u32, old: (u16, u16), new: (u16, u16)) -> u32 {
    let pack = |(src, dst): (u16, u16)| u32::from(src) | (u32::from(dst) << 16);
    lb_sctp_crc_after_port_rewrite(crc, len, pack(old), pack(new))
}

/// The CRC32c of an SCTP packet of `len` bytes whose checksum was `crc`
/// after its ports changed from `old` to `new` (each packed as source |
/// destination << 16). Global and never inlined: the kernel verifies a
/// global function once, for any scalar arguments, and each call site
/// costs the verifier one call (a few instructions at run time, SCTP
/// rewrites only).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_sctp_crc_after_port_rewrite(crc: u32, len: u32, old: u32, new: u32) -> u32 {
    let unpack = |ports: u32| (ports as u16, (ports >> 16) as u16);
    crc32c_after_port_rewrite(crc, len, unpack(old), unpack(new))
}
