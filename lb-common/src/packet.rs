//! Packet header layouts and the IPv4 checks every parser applies: shared
//! by the datapath's parsers (XDP direct access, skb loads) and testable on
//! the host.

use crate::{
    PROTO_SCTP, PROTO_TCP, PROTO_UDP,
    frag::{self, Fragment},
    reason::Reason,
    sctp::SCTP_MIN_LEN,
};

pub const ETH_HLEN: usize = 14;
/// `ETH_P_IP` as it sits in the packet, loaded natively.
pub const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
pub const IPV4_MIN_HLEN: usize = 20;
pub const TCP_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;
/// Offset of the checksum inside the TCP and UDP headers.
pub const TCP_CSUM_OFF: usize = 16;
pub const UDP_CSUM_OFF: usize = 6;
/// Offset of the flags byte inside the TCP header.
pub const TCP_FLAGS_OFF: usize = 13;
/// Offsets inside the IPv4 header.
pub const IPV4_CSUM_OFF: usize = 10;
pub const IPV4_SADDR_OFF: usize = 12;

/// TCP header flags (the byte at [`TCP_FLAGS_OFF`]).
pub mod tcp {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type_be: u16,
}

/// The fixed part of the IPv4 header. `packed(2)`: the header follows a
/// 14-byte Ethernet header, so its 32-bit fields are only 2-byte aligned.
#[repr(C, packed(2))]
#[derive(Clone, Copy)]
pub struct Ipv4Hdr {
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len_be: u16,
    pub id_be: u16,
    pub frag_off_be: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub saddr_be: u32,
    pub daddr_be: u32,
}

/// The first four bytes of a TCP, UDP or SCTP header.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ports {
    pub src_be: u16,
    pub dst_be: u16,
}

/// The checks every IPv4 parser applies to the fixed header, before looking
/// at the transport header. Returns the header length and the minimum
/// transport header length for the protocol. A first fragment of TCP or
/// UDP passes (it carries the transport header: see [`crate::frag`]); a
/// later fragment, and any fragment of another protocol, is
/// `PassFragment` (the parsers look a later TCP or UDP one up by its
/// datagram).
#[inline(always)]
pub fn check_ipv4(ip: &Ipv4Hdr) -> Result<(usize, usize), Reason> {
    let ver_ihl = ip.ver_ihl;
    if ver_ihl >> 4 != 4 {
        return Err(Reason::PassMalformed);
    }
    let hlen = ((ver_ihl & 0x0f) as usize) * 4;
    if hlen < IPV4_MIN_HLEN {
        return Err(Reason::PassMalformed);
    }
    let tot_len = u16::from_be(ip.tot_len_be) as usize;
    if tot_len < hlen {
        return Err(Reason::PassMalformed);
    }
    match frag::classify(ip.frag_off_be) {
        Fragment::Whole => {}
        Fragment::First if frag::translated(ip.proto) => {}
        Fragment::First | Fragment::Later => return Err(Reason::PassFragment),
    }
    let l4_min = match ip.proto {
        PROTO_TCP => TCP_HLEN,
        PROTO_UDP => UDP_HLEN,
        PROTO_SCTP => SCTP_MIN_LEN,
        _ => return Err(Reason::PassOtherProtocol),
    };
    if tot_len < hlen + l4_min {
        return Err(Reason::PassMalformed);
    }
    Ok((hlen, l4_min))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use etherparse::{IpNumber, Ipv4HeaderSlice, PacketBuilder};
    use proptest::prelude::*;

    use super::*;

    /// The fixed IPv4 header of `bytes`, read the way the datapath reads it.
    fn header(bytes: &[u8]) -> Ipv4Hdr {
        assert!(bytes.len() >= size_of::<Ipv4Hdr>());
        // SAFETY: length checked; Ipv4Hdr is plain data read unaligned.
        unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast()) }
    }

    fn ip_packet(udp: bool, payload: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let ip = PacketBuilder::ipv4([198, 51, 100, 2], [192, 0, 2, 10], 64);
        let data = std::vec![7u8; payload];
        if udp {
            ip.udp(40000, 53).write(&mut out, &data).unwrap();
        } else {
            ip.tcp(40000, 80, 1, 1024).write(&mut out, &data).unwrap();
        }
        out
    }

    #[test]
    fn well_formed_tcp_and_udp_pass_the_checks() {
        assert_eq!(
            check_ipv4(&header(&ip_packet(false, 10))),
            Ok((20, TCP_HLEN))
        );
        assert_eq!(check_ipv4(&header(&ip_packet(true, 0))), Ok((20, UDP_HLEN)));
    }

    #[test]
    fn each_broken_field_has_its_reason() {
        let good = ip_packet(false, 0);
        let with = |at: usize, value: u8| {
            let mut bytes = good.clone();
            bytes[at] = value;
            check_ipv4(&header(&bytes))
        };
        assert_eq!(with(0, 0x65), Err(Reason::PassMalformed), "version 6");
        assert_eq!(with(0, 0x44), Err(Reason::PassMalformed), "ihl 4");
        assert_eq!(
            with(3, 19),
            Err(Reason::PassMalformed),
            "total length below the header"
        );
        assert_eq!(
            with(3, 30),
            Err(Reason::PassMalformed),
            "total length cuts the TCP header"
        );
        assert_eq!(
            with(6, 0x20),
            Ok((20, TCP_HLEN)),
            "a first fragment carries the ports"
        );
        assert_eq!(with(7, 0x01), Err(Reason::PassFragment), "fragment offset");
        assert_eq!(with(6, 0x40), Ok((20, TCP_HLEN)), "don't fragment is fine");
        assert_eq!(with(9, 1), Err(Reason::PassOtherProtocol), "ICMP");
        let mut sctp_first = good.clone();
        sctp_first[6] = 0x20;
        sctp_first[9] = PROTO_SCTP;
        assert_eq!(
            check_ipv4(&header(&sctp_first)),
            Err(Reason::PassFragment),
            "SCTP fragments are not translated (frag.rs)"
        );
    }

    proptest! {
        /// On any bytes at all, the checks agree with an independent IPv4
        /// parser: what we accept, etherparse parses as the same header.
        #[test]
        fn accepted_headers_are_valid_ipv4(mut bytes in proptest::collection::vec(any::<u8>(), 20..80)) {
            // Bias towards plausible headers so the Ok branch is exercised.
            if bytes[0] & 1 == 0 {
                bytes[0] = 0x45;
                bytes[6] &= 0x40;
                bytes[7] = 0;
                bytes[9] = if bytes[9] & 1 == 0 { PROTO_TCP } else { PROTO_UDP };
            }
            let result = check_ipv4(&header(&bytes));
            if let Ok((hlen, l4_min)) = result {
                let parsed = Ipv4HeaderSlice::from_slice(&bytes);
                // etherparse needs the options present; we read only the fixed part.
                if bytes.len() >= hlen {
                    let parsed = parsed.unwrap();
                    prop_assert_eq!(parsed.ihl() as usize * 4, hlen);
                    prop_assert!(parsed.protocol() == IpNumber::TCP || parsed.protocol() == IpNumber::UDP);
                    prop_assert!(parsed.fragments_offset().value() == 0, "a later fragment has no ports");
                    prop_assert!(parsed.total_len() as usize >= hlen + l4_min);
                }
            }
        }
    }
}
