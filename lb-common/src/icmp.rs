//! The ICMP port unreachable the datapath answers a Service without
//! endpoints with (kube-proxy's `-j REJECT`), built here so the host can
//! check it against an independent implementation; the reject path in the
//! datapath only moves it into the frame.
//!
//! ```text
//! ip (20) | icmp (8) | quoted ip (20) | quoted l4 (8)   = 56 bytes
//! ```

use crate::{
    csum,
    packet::{IPV4_MIN_HLEN, Ipv4Hdr},
};

pub const IPPROTO_ICMP: u8 = 1;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_PORT_UNREACH: u8 = 3;
pub const ICMP_HLEN: usize = 8;
/// The original IP header (without options) and the first 8 bytes of its
/// payload, as RFC 792 asks.
pub const QUOTE_LEN: usize = IPV4_MIN_HLEN + 8;
/// The IP packet of the answer.
pub const PORT_UNREACHABLE_LEN: usize = IPV4_MIN_HLEN + ICMP_HLEN + QUOTE_LEN;

/// The start of the offending datagram, as 16-bit words loaded natively.
pub type Quote = [u16; QUOTE_LEN / 2];

/// An ICMP error message: header and quote.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IcmpError {
    pub icmp_type: u8,
    pub code: u8,
    pub check: u16,
    pub unused: [u16; 2],
    pub quote: Quote,
}

/// An IPv4 packet carrying an ICMP port unreachable.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PortUnreachable {
    pub ip: Ipv4Hdr,
    pub icmp: IcmpError,
}

const _: () = assert!(size_of::<IcmpError>() == ICMP_HLEN + QUOTE_LEN);
const _: () = assert!(size_of::<PortUnreachable>() == PORT_UNREACHABLE_LEN);

/// Whether an ICMP error may be sent to `saddr_be` (RFC 1122 3.2.2: never
/// to an unspecified, broadcast or multicast source, nor class E).
#[inline(always)]
pub const fn may_get_icmp_error(saddr_be: u32) -> bool {
    let src = u32::from_be(saddr_be);
    !(src == 0 || src >> 28 >= 0xe || src == u32::MAX)
}

impl PortUnreachable {
    /// The answer to the datagram that starts with `quote`, from its
    /// destination back to its sender, both checksums computed. `None` when
    /// none may be sent: the header has options (the quote would cut the
    /// transport header) or the sender must not get ICMP errors.
    #[inline(always)]
    pub fn answering(quote: &Quote) -> Option<Self> {
        // SAFETY: the quote starts with the 20-byte header; read unaligned.
        let ip = unsafe { core::ptr::read_unaligned(quote.as_ptr().cast::<Ipv4Hdr>()) };
        if ip.ver_ihl != 0x45 || !may_get_icmp_error(ip.saddr_be) {
            return None;
        }
        let mut reply = Self {
            ip: Ipv4Hdr {
                ver_ihl: 0x45,
                tos: 0xc0, // internetwork control, as the kernel sends ICMP errors
                tot_len_be: (PORT_UNREACHABLE_LEN as u16).to_be(),
                id_be: 0,
                frag_off_be: 0x4000u16.to_be(), // DF
                ttl: 64,
                proto: IPPROTO_ICMP,
                check: 0,
                saddr_be: ip.daddr_be,
                daddr_be: ip.saddr_be,
            },
            icmp: IcmpError {
                icmp_type: ICMP_DEST_UNREACH,
                code: ICMP_PORT_UNREACH,
                check: 0,
                unused: [0; 2],
                quote: *quote,
            },
        };
        // SAFETY: both are plain data of an even size with no padding
        // (asserted above) and 2-byte aligned; viewed as words.
        let (ip_words, icmp_words) = unsafe {
            (
                &*(&raw const reply.ip).cast::<[u16; IPV4_MIN_HLEN / 2]>(),
                &*(&raw const reply.icmp).cast::<[u16; (ICMP_HLEN + QUOTE_LEN) / 2]>(),
            )
        };
        let (ip_check, icmp_check) = (csum::checksum(ip_words), csum::checksum(icmp_words));
        reply.ip.check = ip_check;
        reply.icmp.check = icmp_check;
        Some(reply)
    }
}

#[cfg(test)]
mod tests;
