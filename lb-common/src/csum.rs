//! The Internet checksum: computed whole (RFC 1071, for the headers the
//! reject path builds) and updated incrementally (RFC 1624, for the XDP
//! path's rewrites; the tc path uses the kernel's `l3/l4_csum_replace`
//! helpers, which also understand `CHECKSUM_PARTIAL` skbs). The one
//! implementation for the datapath and its tests.
//!
//! All values are taken exactly as they sit in memory (network byte order
//! loaded natively): the one's complement sum does not depend on byte order
//! as long as the checksum and the data are read the same way.

use crate::PROTO_UDP;

/// Folds a 32-bit one's complement accumulator to 16 bits.
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The Internet checksum of `N` 16-bit words. Over an array of fixed size,
/// not a slice, so the datapath's loop has a bound the verifier can see
/// (LLVM unrolls it).
#[inline(always)]
pub const fn checksum<const N: usize>(words: &[u16; N]) -> u16 {
    // Two folds carry any sum of up to 65537 words.
    const { assert!(N <= 0x1_0001) };
    let mut sum = 0u32;
    let mut i = 0;
    while i < N {
        sum += words[i] as u32;
        i += 1;
    }
    !fold(sum)
}

/// `HC' = ~(~HC + ~m + m')` for a 16-bit field.
#[inline(always)]
pub const fn replace2(check: u16, from: u16, to: u16) -> u16 {
    let sum = (!check) as u32 + (!from) as u32 + to as u32;
    !fold(sum)
}

/// `HC' = ~(~HC + ~m + m')` for a 32-bit field (two 16-bit words).
#[inline(always)]
pub const fn replace4(check: u16, from: u32, to: u32) -> u16 {
    let nfrom = !from;
    let sum = (!check) as u32 + (nfrom & 0xffff) + (nfrom >> 16) + (to & 0xffff) + (to >> 16);
    !fold(sum)
}

/// The TCP or UDP checksum after rewriting one address (it is in the
/// pseudo-header) and one port. A UDP checksum of zero means "none" and
/// stays zero; a computed UDP zero is sent as 0xffff (RFC 768).
#[inline(always)]
pub const fn l4_after_rewrite(
    proto: u8,
    check: u16,
    from_addr: u32,
    to_addr: u32,
    from_port: u16,
    to_port: u16,
) -> u16 {
    if proto == PROTO_UDP && check == 0 {
        return 0;
    }
    let check = replace2(replace4(check, from_addr, to_addr), from_port, to_port);
    if proto == PROTO_UDP && check == 0 {
        0xffff
    } else {
        check
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    use super::*;
    use crate::PROTO_TCP;

    /// Builds an IPv4 packet with full checksums computed by etherparse.
    fn packet(
        udp: bool,
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let ip = PacketBuilder::ipv4(src, dst, 64);
        let mut out = Vec::new();
        if udp {
            ip.udp(sport, dport).write(&mut out, payload).unwrap();
        } else {
            ip.tcp(sport, dport, 1, 1024)
                .syn()
                .write(&mut out, payload)
                .unwrap();
        }
        out
    }

    fn checksums(frame: &[u8]) -> (u16, u16) {
        let sliced = SlicedPacket::from_ip(frame).unwrap();
        let ip = match sliced.net.unwrap() {
            etherparse::NetSlice::Ipv4(v4) => v4.header().header_checksum(),
            _ => unreachable!(),
        };
        let l4 = match sliced.transport.unwrap() {
            TransportSlice::Tcp(tcp) => tcp.checksum(),
            TransportSlice::Udp(udp) => udp.checksum(),
            _ => unreachable!(),
        };
        (ip, l4)
    }

    /// Values as the datapath sees them: loaded natively from network-order bytes.
    fn ne32(bytes: [u8; 4]) -> u32 {
        u32::from_ne_bytes(bytes)
    }
    fn ne16(value: u16) -> u16 {
        value.to_be()
    }

    proptest! {
        /// Rewriting the destination incrementally gives exactly the
        /// checksums a full recomputation of the rewritten packet gives.
        #[test]
        fn incremental_update_equals_full_recomputation(
            udp in any::<bool>(),
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), new_dst in any::<[u8; 4]>(),
            sport in any::<u16>(), dport in any::<u16>(), new_dport in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let before = packet(udp, src, dst, sport, dport, &payload);
            let after = packet(udp, src, new_dst, sport, new_dport, &payload);
            let (ip_before, l4_before) = checksums(&before);
            let (ip_after, l4_after) = checksums(&after);
            // The IPv4 header checksum is stored as read natively.
            let ip = replace4(ip_before.to_be(), ne32(dst), ne32(new_dst));
            prop_assert_eq!(u16::from_be(ip), ip_after);
            let proto = if udp { PROTO_UDP } else { PROTO_TCP };
            let l4 = l4_after_rewrite(proto, l4_before.to_be(), ne32(dst), ne32(new_dst), ne16(dport), ne16(new_dport));
            // etherparse writes 0xffff for a computed UDP zero, as we do.
            prop_assert_eq!(u16::from_be(l4), l4_after);
        }

        #[test]
        fn a_udp_checksum_of_zero_stays_zero(from in any::<u32>(), to in any::<u32>(), p in any::<u16>(), q in any::<u16>()) {
            prop_assert_eq!(l4_after_rewrite(PROTO_UDP, 0, from, to, p, q), 0);
        }
    }

    /// A header of 16-bit words read natively from its bytes.
    fn words<const N: usize>(bytes: &[u8]) -> [u16; N] {
        core::array::from_fn(|i| u16::from_ne_bytes([bytes[2 * i], bytes[2 * i + 1]]))
    }

    proptest! {
        /// Over an IPv4 header with its checksum zeroed, `checksum` gives
        /// what etherparse computes.
        #[test]
        fn checksum_of_an_ipv4_header_is_etherparse_s(
            udp in any::<bool>(),
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
            sport in any::<u16>(), dport in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut bytes = packet(udp, src, dst, sport, dport, &payload);
            let (expected, _) = checksums(&bytes);
            bytes[10..12].copy_from_slice(&[0, 0]);
            let header: [u16; 10] = words(&bytes);
            prop_assert_eq!(u16::from_be(checksum(&header)), expected);
        }
    }

    #[test]
    fn a_header_with_its_checksum_in_place_sums_to_zero() {
        let bytes = packet(true, [10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"x");
        let header: [u16; 10] = words(&bytes);
        assert_eq!(checksum(&header), 0);
    }

    #[test]
    fn fold_carries_twice() {
        assert_eq!(fold(0xffff_ffff), 0xffff);
        assert_eq!(fold(0x0001_ffff), 0x0001);
    }
}
