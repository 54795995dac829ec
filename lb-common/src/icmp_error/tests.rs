extern crate std;
use std::vec::Vec;

use etherparse::{Icmpv4Type, PacketBuilder, icmpv4::DestUnreachableHeader};
use proptest::prelude::*;

use super::*;

const ROUTER: [u8; 4] = [203, 0, 113, 254];
const NODE: [u8; 4] = [192, 0, 2, 10];
const CLIENT: [u8; 4] = [198, 51, 100, 7];
const POD: [u8; 4] = [10, 244, 1, 5];

/// An IPv4 packet (no Ethernet) of `proto` with `payload`.
fn packet(
    proto: u8,
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let ip = PacketBuilder::ipv4(src, dst, 64);
    let mut out = Vec::new();
    if proto == PROTO_UDP {
        ip.udp(sport, dport).write(&mut out, payload).unwrap();
    } else {
        ip.tcp(sport, dport, 7, 1000)
            .ack(9)
            .write(&mut out, payload)
            .unwrap();
    }
    out
}

/// An ICMP error from `from` to `to`, quoting the first `quote` bytes of
/// `quoted`.
fn error(icmp: Icmpv4Type, from: [u8; 4], to: [u8; 4], quoted: &[u8], quote: usize) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(from, to, 64)
        .icmpv4(icmp)
        .write(&mut out, &quoted[..quote.min(quoted.len())])
        .unwrap();
    out
}

fn frag_needed() -> Icmpv4Type {
    Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: 1400,
    })
}

fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    !csum::fold(sum)
}

fn headers(bytes: &[u8]) -> ErrorHeaders {
    // SAFETY: plain data, length checked by the slice index.
    unsafe { core::ptr::read_unaligned(bytes[..ERROR_HEADERS_LEN].as_ptr().cast()) }
}

fn put(bytes: &mut [u8], h: &ErrorHeaders) {
    // SAFETY: as above.
    unsafe { core::ptr::write_unaligned(bytes[..ERROR_HEADERS_LEN].as_mut_ptr().cast(), *h) }
}

fn be(addr: [u8; 4]) -> u32 {
    u32::from_ne_bytes(addr)
}

fn ep(addr: [u8; 4], port: u16) -> Endpoint4 {
    Endpoint4::new(be(addr), port.to_be())
}

/// Applies `f` to `bytes`' headers, the quote's TCP checksum included
/// when it holds one.
fn rewrite(bytes: &mut [u8], f: impl FnOnce(&mut ErrorHeaders, Option<&mut u16>)) {
    let mut h = headers(bytes);
    let tcp_at = INNER_TCP_CSUM_OFF;
    let mut tcp =
        (bytes.len() >= tcp_at + 2).then(|| u16::from_ne_bytes([bytes[tcp_at], bytes[tcp_at + 1]]));
    f(&mut h, tcp.as_mut());
    put(bytes, &h);
    if let Some(tcp) = tcp {
        bytes[tcp_at..tcp_at + 2].copy_from_slice(&tcp.to_ne_bytes());
    }
}

fn assert_checksums(bytes: &[u8]) {
    assert_eq!(internet_checksum(&bytes[..20]), 0, "outer IPv4 checksum");
    assert_eq!(internet_checksum(&bytes[20..]), 0, "ICMP checksum");
    assert_eq!(internet_checksum(&bytes[28..48]), 0, "quoted IPv4 checksum");
}

proptest! {
    /// A frag-needed from the client's side about a masqueraded reply
    /// (quote: node:NP -> client) becomes the error the pod would have
    /// got about its own packet (pod:tp -> node:snat port): the quote is
    /// byte for byte the pod's packet's (checksums included, whatever the
    /// quote's length), and every checksum is valid.
    #[test]
    fn an_error_about_a_reply_becomes_the_pods_own(
        udp in any::<bool>(), quote in 28usize..80, payload in proptest::collection::vec(any::<u8>(), 0..40),
        np in 30000u16..32768, c in 1024u16..65535, tp in 1u16..65535, snat in 61000u16..65535,
    ) {
        let proto = if udp { PROTO_UDP } else { PROTO_TCP };
        // A quote cut inside the TCP checksum holds half of the old one.
        prop_assume!(udp || quote != 37);
        let reply = packet(proto, NODE, np, CLIENT, c, &payload);
        let pods = packet(proto, POD, tp, NODE, snat, &payload);
        let mut bytes = error(frag_needed(), ROUTER, NODE, &reply, quote);
        let h = headers(&bytes);
        prop_assert_eq!(h.quoted_flow(), Some(Flow4::new(ep(NODE, np), ep(CLIENT, c), proto)));
        rewrite(&mut bytes, |h, mut tcp| {
            h.set_outer_destination(be(POD));
            h.set_inner_source(ep(POD, tp), tcp.as_deref_mut());
            h.set_inner_destination(ep(NODE, snat), tcp);
        });
        assert_checksums(&bytes);
        let expected = error(frag_needed(), ROUTER, POD, &pods, quote);
        prop_assert_eq!(&bytes[28..], &expected[28..], "the quote is the pod's packet's");
        prop_assert_eq!(bytes, expected);
    }

    /// A port unreachable from the pod about a request (quote: client ->
    /// pod:tp) leaves as the frontend's own: from the frontend, quoting
    /// client -> frontend.
    #[test]
    fn an_error_about_a_request_becomes_the_frontends(
        udp in any::<bool>(), quote in 28usize..80, payload in proptest::collection::vec(any::<u8>(), 0..40),
        np in 30000u16..32768, c in 1024u16..65535, tp in 1u16..65535,
    ) {
        let proto = if udp { PROTO_UDP } else { PROTO_TCP };
        prop_assume!(udp || quote != 37);
        let request = packet(proto, CLIENT, c, POD, tp, &payload);
        let clients = packet(proto, CLIENT, c, NODE, np, &payload);
        let unreachable = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port);
        let mut bytes = error(unreachable.clone(), POD, CLIENT, &request, quote);
        rewrite(&mut bytes, |h, tcp| {
            h.set_outer_source(be(NODE));
            h.set_inner_destination(ep(NODE, np), tcp);
        });
        assert_checksums(&bytes);
        prop_assert_eq!(bytes, error(unreachable, NODE, CLIENT, &clients, quote));
    }
}

#[test]
fn a_udp_quote_without_checksum_keeps_none() {
    let mut reply = packet(PROTO_UDP, NODE, 30053, CLIENT, 40000, b"x");
    reply[26..28].copy_from_slice(&[0, 0]);
    let mut bytes = error(frag_needed(), ROUTER, NODE, &reply, 28);
    rewrite(&mut bytes, |h, tcp| h.set_inner_source(ep(POD, 53), tcp));
    assert_checksums(&bytes);
    assert_eq!(&bytes[54..56], &[0, 0]);
}

#[test]
fn only_unreachable_and_time_exceeded_about_a_packet_to_its_source_are_translated() {
    let reply = packet(PROTO_UDP, NODE, 30053, CLIENT, 40000, b"x");
    let ok = |icmp: Icmpv4Type, to: [u8; 4]| {
        headers(&error(icmp, ROUTER, to, &reply, 28))
            .quoted_flow()
            .is_some()
    };
    assert!(ok(frag_needed(), NODE));
    assert!(ok(
        Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit),
        NODE
    ));
    assert!(
        !ok(frag_needed(), CLIENT),
        "sent elsewhere than the quote's source"
    );
    let echo = Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader { id: 1, seq: 1 });
    assert!(!ok(echo, NODE), "a query, not an error");
    assert!(translated_type(3, 13) && !translated_type(11, 2) && !translated_type(5, 0));
    // A quote of a later fragment has no ports.
    let mut later = error(frag_needed(), ROUTER, NODE, &reply, 28);
    later[28 + 7] = 1;
    assert!(headers(&later).quoted_flow().is_none());
}
