//! Rejecting traffic to a Service without endpoints the way kube-proxy does
//! (`-j REJECT`): an ICMP destination-unreachable / port-unreachable back to
//! the client, for TCP and UDP alike (a TCP client's connect() then fails
//! with ECONNREFUSED at once instead of timing out).
//!
//! The frame is turned into the reply in place and sent back out of the
//! device it came in on (`XDP_TX`):
//!
//! ```text
//! in:  eth | ip (20) | l4 (>= 8) ...
//! out: eth | ip (20) | icmp (8) | quoted ip (20) | quoted l4 (8)   = 70 bytes
//! ```

use aya_ebpf::{
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len},
    programs::XdpContext,
};

use crate::parse::{ETH_HLEN, EthHdr, IPV4_MIN_HLEN, Ipv4Hdr};

const ICMP_HLEN: usize = 8;
/// The original IP header (without options) and the first 8 bytes of its
/// payload, as RFC 792 asks.
const QUOTE_LEN: usize = IPV4_MIN_HLEN + 8;
const GROW: usize = IPV4_MIN_HLEN + ICMP_HLEN;
const REPLY_LEN: usize = ETH_HLEN + GROW + QUOTE_LEN;
const IPPROTO_ICMP: u8 = 1;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_PORT_UNREACH: u8 = 3;

#[repr(C)]
#[derive(Clone, Copy)]
struct Reply {
    eth: EthHdr,
    ip: Ipv4Hdr,
    icmp_type: u8,
    icmp_code: u8,
    icmp_check: u16,
    icmp_unused: [u16; 2],
    quote: [u16; QUOTE_LEN / 2],
}

const _: () = assert!(size_of::<Reply>() == REPLY_LEN);

/// One's complement sum of 16-bit words as loaded (native order).
#[inline(always)]
fn sum16(words: &[u16]) -> u32 {
    let mut sum = 0u32;
    for w in words {
        sum += *w as u32;
    }
    sum
}

#[inline(always)]
fn finish(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Rewrites the frame (already parsed as IPv4 TCP/UDP) into an ICMP port
/// unreachable for its sender. `Err` leaves the verdict to the caller
/// (drop): IP options, a sender that must not get ICMP errors (RFC 1122:
/// unspecified, broadcast, multicast), or a failed resize.
#[inline(always)]
pub fn icmp_port_unreachable(ctx: &XdpContext) -> Result<(), ()> {
    let (data, data_end) = (ctx.data(), ctx.data_end());
    if data + ETH_HLEN + QUOTE_LEN > data_end {
        return Err(());
    }
    // SAFETY: bounds-checked above; copies to the stack.
    let (eth, quote) = unsafe {
        (
            core::ptr::read_unaligned(data as *const EthHdr),
            core::ptr::read_unaligned((data + ETH_HLEN) as *const [u16; QUOTE_LEN / 2]),
        )
    };
    // SAFETY: as above.
    let ip = unsafe { core::ptr::read_unaligned((data + ETH_HLEN) as *const Ipv4Hdr) };
    if ip.ver_ihl != 0x45 {
        return Err(());
    }
    let src = u32::from_be(ip.saddr_be);
    if src == 0 || src >> 28 >= 0xe || src == u32::MAX {
        return Err(());
    }

    // Room for the new IP and ICMP headers in front, the rest cut off.
    // SAFETY: plain helper calls on our context.
    unsafe {
        if bpf_xdp_adjust_head(ctx.ctx, -(GROW as i32)) != 0 {
            return Err(());
        }
        let len = bpf_xdp_get_buff_len(ctx.ctx) as i64;
        if bpf_xdp_adjust_tail(ctx.ctx, (REPLY_LEN as i64 - len) as i32) != 0 {
            return Err(());
        }
    }
    let (data, data_end) = (ctx.data(), ctx.data_end());
    if data + REPLY_LEN > data_end {
        return Err(());
    }

    let mut reply = Reply {
        eth: EthHdr {
            dst: eth.src,
            src: eth.dst,
            ether_type_be: eth.ether_type_be,
        },
        ip: Ipv4Hdr {
            ver_ihl: 0x45,
            tos: 0xc0, // internetwork control, as the kernel sends ICMP errors
            tot_len_be: ((GROW + QUOTE_LEN) as u16).to_be(),
            id_be: 0,
            frag_off_be: 0x4000u16.to_be(), // DF
            ttl: 64,
            proto: IPPROTO_ICMP,
            check: 0,
            saddr_be: ip.daddr_be,
            daddr_be: ip.saddr_be,
        },
        icmp_type: ICMP_DEST_UNREACH,
        icmp_code: ICMP_PORT_UNREACH,
        icmp_check: 0,
        icmp_unused: [0; 2],
        quote,
    };
    // SAFETY: `Reply` is plain data of an even size; viewed as words.
    let words = unsafe { &*(&raw const reply as *const [u16; REPLY_LEN / 2]) };
    let ip_words = &words[ETH_HLEN / 2..(ETH_HLEN + IPV4_MIN_HLEN) / 2];
    let icmp_words = &words[(ETH_HLEN + IPV4_MIN_HLEN) / 2..];
    let (ip_check, icmp_check) = (finish(sum16(ip_words)), finish(sum16(icmp_words)));
    reply.ip.check = ip_check;
    reply.icmp_check = icmp_check;
    // SAFETY: bounds-checked above.
    unsafe { core::ptr::write_unaligned(data as *mut Reply, reply) };
    Ok(())
}
