//! Bounds-checked Ethernet / IPv4 / TCP / UDP / SCTP parsing (SCTP's own
//! header in [`crate::sctp`]).
//!
//! Two front ends share one set of rules ([`check_ipv4`]): [`xdp_ipv4`] reads
//! the packet in place (direct packet access, every read bounds-checked
//! against `data_end`), [`skb_ipv4`] reads it with `bpf_skb_load_bytes`.
//! A packet that fails a check is never rewritten: the caller passes it on
//! and counts the returned reason.

use aya_ebpf::programs::TcContext;
use lb_common::{
    Endpoint4, Flow4, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
    frag::{Fragment, classify},
    reason::Reason,
};

use crate::{frag, sctp};

pub use lb_common::packet::*;

/// A parsed IPv4 TCP/UDP/SCTP packet in an XDP buffer. The pointers are
/// bounds-checked: `ip` covers the fixed IPv4 header, `l4`'s lie inside
/// the transport header.
pub struct XdpPacket {
    pub ip: *mut Ipv4Hdr,
    /// The transport header; `None` in a later fragment (see `frag`).
    pub l4: Option<XdpL4>,
    /// The ports as parsed (a later fragment's: its first fragment's).
    pub ports: Ports,
    pub proto: u8,
    /// The TCP flags byte (0 for UDP; for SCTP the first chunk's type,
    /// which `lb_common::ct` reads in its place).
    pub tcp_flags: u8,
}

/// The transport header of an [`XdpPacket`].
pub struct XdpL4 {
    pub ports: *mut Ports,
    /// The checksum: TCP's and UDP's 16 bits; for SCTP the first half of
    /// its 32-bit CRC32c, all four bytes bounds-checked.
    pub csum: *mut u16,
}

impl XdpPacket {
    /// The tuple the packet carries.
    #[inline(always)]
    pub fn flow(&self) -> Flow4 {
        // SAFETY: `xdp_ipv4` bounds-checked the pointer.
        let ip = unsafe { *self.ip };
        flow(&ip, self.ports, self.proto)
    }
}

#[inline(always)]
fn flow(ip: &Ipv4Hdr, ports: Ports, proto: u8) -> Flow4 {
    Flow4::new(
        Endpoint4::new(ip.saddr_be, ports.src_be),
        Endpoint4::new(ip.daddr_be, ports.dst_be),
        proto,
    )
}

/// A `T` at `offset` from `data`, when it ends by `data_end`.
#[inline(always)]
pub fn ptr_at<T>(data: usize, data_end: usize, offset: usize) -> Option<*mut T> {
    let start = data + offset;
    if start + size_of::<T>() > data_end {
        return None;
    }
    Some(start as *mut T)
}

/// Parses an XDP buffer. Headers must sit in its linear part
/// (`data..data_end`); `buff_len` gives the whole frame, fragments
/// included (multi-buffer XDP), against which the IPv4 total length is
/// checked. It is a helper call, so it is asked only when the linear part
/// alone is too short for the datagram (a jumbo frame's): every other
/// packet saves the call.
#[inline(always)]
pub fn xdp_ipv4(
    data: usize,
    data_end: usize,
    buff_len: impl FnOnce() -> usize,
) -> Result<XdpPacket, Reason> {
    if let Some(pkt) = plain_ipv4(data, data_end, data_end - data) {
        return Ok(pkt);
    }
    let eth: *const EthHdr = ptr_at(data, data_end, 0).ok_or(Reason::PassMalformed)?;
    // SAFETY: bounds-checked above.
    if unsafe { (*eth).ether_type_be } != ETH_P_IP_BE {
        return Err(Reason::PassNotIpv4);
    }
    let ip: *mut Ipv4Hdr = ptr_at(data, data_end, ETH_HLEN).ok_or(Reason::PassMalformed)?;
    // SAFETY: bounds-checked above.
    let hdr = unsafe { *ip };
    let checked = check_ipv4(&hdr);
    // The whole datagram must be inside the frame.
    let tot_len = u16::from_be(hdr.tot_len_be) as usize;
    if ETH_HLEN + tot_len > data_end - data && ETH_HLEN + tot_len > buff_len() {
        return Err(Reason::PassMalformed);
    }
    let (hlen, l4_min) = match checked {
        Err(Reason::PassFragment) => {
            let ports = frag::recall_at_ingress(&hdr)?;
            return Ok(XdpPacket {
                ip,
                l4: None,
                ports,
                proto: hdr.proto,
                tcp_flags: 0,
            });
        }
        checked => checked?,
    };
    let l4 = data + ETH_HLEN + hlen;
    if l4 + l4_min > data_end {
        return Err(Reason::PassMalformed);
    }
    let ports: *mut Ports = ptr_at(l4, data_end, 0).ok_or(Reason::PassMalformed)?;
    if hdr.proto == PROTO_SCTP {
        let (csum, first_chunk) = sctp::xdp_header(l4, data_end)?;
        return Ok(XdpPacket {
            ip,
            // SAFETY: bounds-checked above.
            ports: unsafe { *ports },
            l4: Some(XdpL4 { ports, csum }),
            proto: PROTO_SCTP,
            tcp_flags: first_chunk,
        });
    }
    let (csum_off, proto) = if l4_min == TCP_HLEN {
        (TCP_CSUM_OFF, PROTO_TCP)
    } else {
        (UDP_CSUM_OFF, PROTO_UDP)
    };
    let csum: *mut u16 = ptr_at(l4, data_end, csum_off).ok_or(Reason::PassMalformed)?;
    let tcp_flags = if proto == PROTO_TCP {
        let flags: *const u8 = ptr_at(l4, data_end, TCP_FLAGS_OFF).ok_or(Reason::PassMalformed)?;
        // SAFETY: bounds-checked above.
        unsafe { *flags }
    } else {
        0
    };
    // SAFETY: bounds-checked above.
    let ports_value = unsafe { *ports };
    frag::remember_first(&hdr, ports_value);
    Ok(XdpPacket {
        ip,
        l4: Some(XdpL4 { ports, csum }),
        ports: ports_value,
        proto,
        tcp_flags,
    })
}

/// The packet nearly all traffic is, parsed in a few instructions: IPv4
/// without options and unfragmented, TCP or UDP, its headers in the linear
/// part (`data` to `data_end`) and the whole datagram within `frame_len`
/// (XDP: the linear part too; an skb: its length). It is what
/// [`xdp_ipv4`]'s and [`skb_ipv4`]'s general rules make of such a
/// packet (`check_ipv4` passes it with a 20-byte header, nothing to
/// remember for its fragments); anything else, valid or not, is `None` and
/// takes those rules. The general path's checks each carry their own
/// reason, which the compiler keeps in registers and spills across the
/// whole parse; this one has no reason to give.
#[inline(always)]
fn plain_ipv4(data: usize, data_end: usize, frame_len: usize) -> Option<XdpPacket> {
    const L4: usize = ETH_HLEN + IPV4_MIN_HLEN;
    let eth: *const EthHdr = ptr_at(data, data_end, 0)?;
    let ip: *mut Ipv4Hdr = ptr_at(data, data_end, ETH_HLEN)?;
    // SAFETY: bounds-checked above.
    let (ether_type_be, hdr) = unsafe { ((*eth).ether_type_be, *ip) };
    let whole = classify(hdr.frag_off_be) == Fragment::Whole;
    if ether_type_be != ETH_P_IP_BE || hdr.ver_ihl != 0x45 || !whole {
        return None;
    }
    let (l4_len, csum_off) = match hdr.proto {
        PROTO_TCP => (TCP_HLEN, TCP_CSUM_OFF),
        PROTO_UDP => (UDP_HLEN, UDP_CSUM_OFF),
        _ => return None,
    };
    let tot_len = u16::from_be(hdr.tot_len_be) as usize;
    if tot_len < IPV4_MIN_HLEN + l4_len || ETH_HLEN + tot_len > frame_len {
        return None;
    }
    let ports: *mut Ports = ptr_at(data, data_end, L4)?;
    let csum: *mut u16 = ptr_at(data, data_end, L4 + csum_off)?;
    let tcp_flags = if hdr.proto == PROTO_TCP {
        let flags: *const u8 = ptr_at(data, data_end, L4 + TCP_FLAGS_OFF)?;
        // SAFETY: bounds-checked above.
        unsafe { *flags }
    } else {
        0
    };
    Some(XdpPacket {
        ip,
        l4: Some(XdpL4 { ports, csum }),
        // SAFETY: bounds-checked above.
        ports: unsafe { *ports },
        proto: hdr.proto,
        tcp_flags,
    })
}

/// A parsed IPv4 TCP/UDP/SCTP packet in an skb: the transport header's
/// offsets and the tuple it carries.
pub struct SkbPacket {
    pub l4_off: usize,
    /// The transport header is there (not a later fragment: then `flow`'s
    /// ports are its first fragment's, see `frag`).
    pub l4: bool,
    /// The checksum's offset (SCTP: its CRC32c's).
    pub csum_off: usize,
    pub flow: Flow4,
    /// The TCP flags byte (0 for UDP; for SCTP the first chunk's type).
    pub tcp_flags: u8,
}

/// Parses an skb: the plain packet by direct reads of its linear part,
/// anything else with `bpf_skb_load_bytes` (works on non-linear skbs too).
/// Each load is a helper call, and the reply path made four.
#[inline(always)]
pub fn skb_ipv4(ctx: &TcContext) -> Result<SkbPacket, Reason> {
    if let Some(pkt) = plain_ipv4(ctx.data(), ctx.data_end(), ctx.len() as usize) {
        return Ok(plain_skb(&pkt));
    }
    let ether_type: u16 = ctx.load(12).map_err(|_| Reason::PassMalformed)?;
    if ether_type != ETH_P_IP_BE {
        return Err(Reason::PassNotIpv4);
    }
    let hdr: Ipv4Hdr = ctx.load(ETH_HLEN).map_err(|_| Reason::PassMalformed)?;
    let checked = check_ipv4(&hdr);
    let tot_len = u16::from_be(hdr.tot_len_be) as usize;
    if ETH_HLEN + tot_len > ctx.len() as usize {
        return Err(Reason::PassMalformed);
    }
    let (hlen, l4_min) = match checked {
        Err(Reason::PassFragment) => {
            let ports = frag::recall_at_egress(&hdr)?;
            return Ok(SkbPacket {
                l4_off: 0,
                l4: false,
                csum_off: 0,
                flow: flow(&hdr, ports, hdr.proto),
                tcp_flags: 0,
            });
        }
        checked => checked?,
    };
    let l4_off = ETH_HLEN + hlen;
    let ports: Ports = ctx.load(l4_off).map_err(|_| Reason::PassMalformed)?;
    if hdr.proto == PROTO_SCTP {
        return Ok(SkbPacket {
            l4_off,
            l4: true,
            csum_off: l4_off + sctp::CSUM_OFF,
            flow: flow(&hdr, ports, PROTO_SCTP),
            tcp_flags: sctp::skb_first_chunk(ctx, l4_off)?,
        });
    }
    let (csum_off, proto) = if l4_min == TCP_HLEN {
        (TCP_CSUM_OFF, PROTO_TCP)
    } else {
        (UDP_CSUM_OFF, PROTO_UDP)
    };
    let tcp_flags = if proto == PROTO_TCP {
        ctx.load(l4_off + TCP_FLAGS_OFF)
            .map_err(|_| Reason::PassMalformed)?
    } else {
        0
    };
    frag::remember_first(&hdr, ports);
    Ok(SkbPacket {
        l4_off,
        l4: true,
        csum_off: l4_off + csum_off,
        flow: flow(&hdr, ports, proto),
        tcp_flags,
    })
}

/// The skb form of a plain packet ([`plain_ipv4`]: a 20-byte IPv4 header,
/// TCP or UDP).
#[inline(always)]
fn plain_skb(pkt: &XdpPacket) -> SkbPacket {
    const L4: usize = ETH_HLEN + IPV4_MIN_HLEN;
    let csum_off = if pkt.proto == PROTO_TCP {
        TCP_CSUM_OFF
    } else {
        UDP_CSUM_OFF
    };
    SkbPacket {
        l4_off: L4,
        l4: true,
        csum_off: L4 + csum_off,
        flow: pkt.flow(),
        tcp_flags: pkt.tcp_flags,
    }
}
