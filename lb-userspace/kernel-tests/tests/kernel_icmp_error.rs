//! ICMP errors about translated flows through the real programs, both
//! directions, as conntrack translates them for kube-proxy
//! (`nf_nat_icmp_reply_translation`: an error "related" to a NATed
//! connection gets the connection's reverse translation, quote included)
//! and Cilium's NAT does (bpf/lib/nat.h, `snat_v4_rev_nat_handle_icmp_error`).
//! Every output is compared byte for byte with the error built directly
//! with the translated addresses (etherparse computes its checksums), and
//! its checksums are recomputed here: the outer IPv4 header, the ICMP
//! message, the quoted IPv4 header.

mod common;

use std::net::Ipv4Addr;

use common::*;
use etherparse::{Icmpv4Type, PacketBuilder, icmpv4::DestUnreachableHeader};
use lb::datapath::DatapathMaps as _;
use lb_common::{
    BE_FLAG_LOCAL, BE_FLAG_REMOTE, FE_KIND_NODE_PORT, FE_KIND_SHIFT, PROTO_TCP, PROTO_UDP,
    SCOPE_EXTERNAL, packet::tcp::SYN, reason::Reason, snat::FE_FLAG_MASQUERADE,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
/// A router between the node and the client.
const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);
const MASQUERADED_PORT: u16 = 30054;

/// The IPv4 packet (no Ethernet) an error quotes: TCP with a payload, so
/// the quote holds its checksum.
fn quoted(proto: u8, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let ip = PacketBuilder::ipv4(src.octets(), dst.octets(), 63);
    let mut out = Vec::new();
    if proto == PROTO_TCP {
        ip.tcp(sport, dport, 1, 1000)
            .ack(2)
            .write(&mut out, &[0x5a; 1400])
            .unwrap();
    } else {
        ip.udp(sport, dport).write(&mut out, &[0x5a; 1400]).unwrap();
    }
    out
}

/// An ICMP error from `from` to `to` quoting 548 bytes of `packet` (as
/// Linux quotes: up to 576 bytes in all).
fn error(icmp: Icmpv4Type, from: Ipv4Addr, to: Ipv4Addr, packet: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, NODE_MAC)
        .ipv4(from.octets(), to.octets(), 64)
        .icmpv4(icmp)
        .write(&mut out, &packet[..548])
        .unwrap();
    out
}

fn frag_needed() -> Icmpv4Type {
    Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: 1400,
    })
}

fn port_unreachable() -> Icmpv4Type {
    Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port)
}

fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `out` has valid checksums (recomputed here) and is `expected`.
fn assert_translated(out: &[u8], expected: &[u8]) {
    assert_eq!(internet_checksum(&out[14..34]), 0, "outer IPv4 checksum");
    assert_eq!(internet_checksum(&out[34..]), 0, "ICMP checksum");
    assert_eq!(internet_checksum(&out[42..62]), 0, "quoted IPv4 checksum");
    assert_eq!(out, expected);
}

fn local_node_ports() -> TestDatapath {
    let mut t = TestDatapath::load();
    tcp_and_udp_node_ports(&mut t, NODE, POD);
    t.maps.set_snat_address(Some(NODE)).unwrap();
    t
}

fn open(t: &TestDatapath, proto: u8, dport: u16) -> Checked {
    let frame = if proto == PROTO_TCP {
        tcp_flags_frame(CLIENT, 40000, NODE, dport, SYN, b"")
    } else {
        udp_frame(CLIENT, 40000, NODE, dport, b"q", true)
    };
    let (action, out) = t.run_xdp(&frame);
    assert_eq!(action, XDP_PASS);
    check_frame(&out)
}

/// A masqueraded NodePort whose backend is on another node (or this one,
/// with the pod hook): the flow opened, its SNAT port.
fn masqueraded(proto: u8, backend_flags: u8) -> (TestDatapath, u16) {
    let mut t = TestDatapath::load();
    let mut pod = backend(POD, 5353, proto);
    pod.flags = backend_flags;
    install_service(
        &mut t.maps,
        frontend_key(NODE, MASQUERADED_PORT, proto, SCOPE_EXTERNAL),
        1,
        0,
        FE_KIND_NODE_PORT << FE_KIND_SHIFT | FE_FLAG_MASQUERADE,
        &[(1, pod)],
    );
    t.maps.set_snat_address(Some(NODE)).unwrap();
    t.maps
        .set_masquerade_local_backends(backend_flags == BE_FLAG_LOCAL)
        .unwrap();
    let p = open(&t, proto, MASQUERADED_PORT);
    assert_eq!((p.src, p.dst), (NODE, POD));
    (t, p.sport)
}

/// Policy Local: a router toward the client cannot forward the pod's
/// (translated) reply NODE:30080 -> CLIENT and says fragmentation needed
/// to the node; the error reaches the pod as the error about its own
/// packet POD:8080 -> CLIENT, the next-hop MTU kept, so the pod lowers its
/// path MTU (conntrack's reverse translation of a related error).
#[test]
fn frag_needed_from_the_client_side_reaches_the_pod() {
    for proto in [PROTO_TCP, PROTO_UDP] {
        let t = local_node_ports();
        let port = if proto == PROTO_TCP { 30080 } else { 30053 };
        let target = if proto == PROTO_TCP { 8080 } else { 53 };
        open(&t, proto, port);
        let reply = quoted(proto, NODE, port, CLIENT, 40000);
        let (action, out) = t.run_xdp(&error(frag_needed(), ROUTER, NODE, &reply));
        assert_eq!(action, XDP_PASS);
        let pods = quoted(proto, POD, target, CLIENT, 40000);
        assert_translated(&out, &error(frag_needed(), ROUTER, POD, &pods));
        assert_eq!(t.stat(Reason::IcmpErrorToBackend), 1);
    }
}

/// Policy Cluster, masqueraded: the quote NODE:30054 -> CLIENT becomes
/// the pod's own packet POD:5353 -> NODE:snat port.
#[test]
fn frag_needed_about_a_masqueraded_reply_reaches_the_pod() {
    for proto in [PROTO_TCP, PROTO_UDP] {
        let (t, snat_port) = masqueraded(proto, BE_FLAG_REMOTE);
        let reply = quoted(proto, NODE, MASQUERADED_PORT, CLIENT, 40000);
        let (action, out) = t.run_xdp(&error(frag_needed(), ROUTER, NODE, &reply));
        assert_eq!(action, XDP_PASS);
        let pods = quoted(proto, POD, 5353, NODE, snat_port);
        assert_translated(&out, &error(frag_needed(), ROUTER, POD, &pods));
        assert_eq!(t.stat(Reason::IcmpErrorToBackend), 1);
    }
}

/// Policy Local: the pod answers the client's datagram with a port
/// unreachable (nothing listens); it leaves by tc egress from the
/// frontend, quoting CLIENT -> NODE:30053: no pod address reaches the
/// client.
#[test]
fn a_port_unreachable_from_the_pod_leaves_from_the_frontend() {
    let t = local_node_ports();
    open(&t, PROTO_UDP, 30053);
    let request = quoted(PROTO_UDP, CLIENT, 40000, POD, 53);
    let (verdict, out) = t.run_tc(&error(port_unreachable(), POD, CLIENT, &request));
    assert_eq!(verdict, TCX_NEXT);
    let clients = quoted(PROTO_UDP, CLIENT, 40000, NODE, 30053);
    assert_translated(&out, &error(port_unreachable(), NODE, CLIENT, &clients));
    assert_eq!(t.stat(Reason::IcmpErrorToClient), 1);
}

/// Masqueraded: the remote pod's error comes back to the node's address
/// (XDP on the device toward it), the local pod's through the pod hook;
/// both leave to the client from the frontend, quoting the client's
/// packet.
#[test]
fn a_masqueraded_pods_error_leaves_to_the_client_from_the_frontend() {
    let clients = quoted(PROTO_UDP, CLIENT, 40000, NODE, MASQUERADED_PORT);
    let expected = error(port_unreachable(), NODE, CLIENT, &clients);

    let (t, snat_port) = masqueraded(PROTO_UDP, BE_FLAG_REMOTE);
    let request = quoted(PROTO_UDP, NODE, snat_port, POD, 5353);
    let pods_error = error(port_unreachable(), POD, NODE, &request);
    let (action, out) = t.run_xdp(&pods_error);
    assert_eq!(action, XDP_PASS);
    assert_translated(&out, &expected);
    assert_eq!(t.stat(Reason::IcmpErrorToClient), 1);

    let (t, snat_port) = masqueraded(PROTO_UDP, BE_FLAG_LOCAL);
    let request = quoted(PROTO_UDP, NODE, snat_port, POD, 5353);
    let (verdict, out) = t
        .dp()
        .run_tc_pod_ingress(&error(port_unreachable(), POD, NODE, &request))
        .unwrap();
    assert_eq!(verdict, TCX_NEXT);
    assert_translated(&out, &expected);
    assert_eq!(t.stat(Reason::IcmpErrorToClient), 1);
}

/// An error about no flow lb knows, a query, and an error quoting a flow
/// but sent elsewhere than its source all pass untouched, counted as
/// other protocols.
#[test]
fn errors_about_no_known_flow_pass_untouched() {
    let t = local_node_ports();
    open(&t, PROTO_UDP, 30053);
    let unknown = quoted(PROTO_UDP, NODE, 30053, CLIENT, 40001);
    let known = quoted(PROTO_UDP, NODE, 30053, CLIENT, 40000);
    let echo = {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, NODE_MAC)
            .ipv4(ROUTER.octets(), NODE.octets(), 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut out, &known[..28])
            .unwrap();
        out
    };
    let time_exceeded = Icmpv4Type::TimeExceeded(
        etherparse::icmpv4::TimeExceededCode::FragmentReassemblyTimeExceeded,
    );
    for frame in [
        error(frag_needed(), ROUTER, NODE, &unknown),
        error(frag_needed(), ROUTER, Ipv4Addr::new(192, 0, 2, 11), &known),
        echo,
    ] {
        let (action, out) = t.run_xdp(&frame);
        assert_eq!((action, &out), (XDP_PASS, &frame));
    }
    let request = quoted(PROTO_UDP, CLIENT, 40001, POD, 53);
    let frame = error(port_unreachable(), POD, CLIENT, &request);
    let (verdict, out) = t.run_tc(&frame);
    assert_eq!((verdict, &out), (TCX_NEXT, &frame));
    assert_eq!(t.stat(Reason::PassOtherProtocol), 4);
    // Time exceeded about a known reply is translated like any error.
    let (_, out) = t.run_xdp(&error(time_exceeded.clone(), ROUTER, NODE, &known));
    let pods = quoted(PROTO_UDP, POD, 53, CLIENT, 40000);
    assert_translated(&out, &error(time_exceeded, ROUTER, POD, &pods));
}
