extern crate std;
use std::vec::Vec;

use etherparse::{
    Icmpv4Header, Icmpv4Slice, Icmpv4Type, IpNumber, Ipv4HeaderSlice, PacketBuilder,
    icmpv4::DestUnreachableHeader,
};
use proptest::prelude::*;

use super::*;

/// An IPv4 TCP or UDP datagram built by etherparse.
fn datagram(udp: bool, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let ip = PacketBuilder::ipv4(src, dst, 64);
    let mut out = Vec::new();
    if udp {
        ip.udp(sport, dport).write(&mut out, b"query").unwrap();
    } else {
        ip.tcp(sport, dport, 1, 1024)
            .syn()
            .write(&mut out, &[])
            .unwrap();
    }
    out
}

fn quote_of(bytes: &[u8]) -> Quote {
    core::array::from_fn(|i| u16::from_ne_bytes([bytes[2 * i], bytes[2 * i + 1]]))
}

fn bytes_of(reply: &PortUnreachable) -> Vec<u8> {
    // SAFETY: plain data without padding (asserted in the module).
    let bytes: &[u8; PORT_UNREACHABLE_LEN] = unsafe { &*(reply as *const PortUnreachable).cast() };
    bytes.to_vec()
}

proptest! {
    /// The answer is a valid IPv4 ICMP port unreachable back to the sender,
    /// quoting the datagram's header and first 8 bytes, with the checksums
    /// etherparse computes.
    #[test]
    fn the_answer_carries_etherparse_s_checksums(
        udp in any::<bool>(),
        src in (1u8..224, any::<[u8; 3]>()).prop_map(|(a, r)| [a, r[0], r[1], r[2]]),
        dst in any::<[u8; 4]>(),
        sport in any::<u16>(), dport in any::<u16>(),
    ) {
        let datagram = datagram(udp, src, dst, sport, dport);
        let reply = PortUnreachable::answering(&quote_of(&datagram)).expect("an answer");
        let bytes = bytes_of(&reply);

        let ip = Ipv4HeaderSlice::from_slice(&bytes).unwrap();
        prop_assert_eq!(ip.source(), dst);
        prop_assert_eq!(ip.destination(), src);
        prop_assert_eq!(ip.protocol(), IpNumber::ICMP);
        prop_assert_eq!(ip.total_len() as usize, PORT_UNREACHABLE_LEN);
        prop_assert_eq!(ip.header_checksum(), ip.to_header().calc_header_checksum());

        let icmp = Icmpv4Slice::from_slice(&bytes[IPV4_MIN_HLEN..]).unwrap();
        let port_unreachable = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port);
        prop_assert_eq!(icmp.icmp_type(), port_unreachable.clone());
        prop_assert_eq!(icmp.payload(), &datagram[..QUOTE_LEN]);
        let expected = Icmpv4Header::with_checksum(port_unreachable, &datagram[..QUOTE_LEN]);
        prop_assert_eq!(icmp.checksum(), expected.checksum);
    }
}

#[test]
fn a_header_with_options_gets_no_answer() {
    let mut datagram = datagram(false, [198, 51, 100, 7], [192, 0, 2, 10], 40000, 80);
    datagram[0] = 0x46;
    assert!(PortUnreachable::answering(&quote_of(&datagram)).is_none());
}

#[test]
fn senders_that_name_no_single_host_get_no_answer() {
    for src in [
        [0, 0, 0, 0],
        [224, 0, 0, 1],
        [239, 1, 2, 3],
        [240, 0, 0, 1],
        [255, 255, 255, 255],
    ] {
        let datagram = datagram(true, src, [192, 0, 2, 10], 5353, 53);
        assert!(
            PortUnreachable::answering(&quote_of(&datagram)).is_none(),
            "{src:?}"
        );
    }
    for src in [[1, 0, 0, 0], [198, 51, 100, 7], [223, 255, 255, 255]] {
        assert!(may_get_icmp_error(u32::from_ne_bytes(src)), "{src:?}");
    }
}
