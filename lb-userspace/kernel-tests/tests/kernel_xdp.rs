//! The XDP ingress program under BPF_PROG_TEST_RUN: packet in, expected
//! packet out, checked by an independent parser (etherparse). Maps are
//! filled only through `KernelMaps`, the writer the agent uses.

mod common;

use std::net::Ipv4Addr;

use common::*;
use lb::datapath::DatapathMaps as _;
use lb_common::{
    Ct4Key, Endpoint4, FE_FLAG_EMPTY_DROP, FE_KIND_NODE_PORT, FE_KIND_SHIFT, Flow4, PROTO_TCP,
    PROTO_UDP, SCOPE_EXTERNAL, SCOPE_INTERNAL, reason::Reason,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const NODE_PORT: u16 = 30080;
const POD_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 6);
const POD_PORT: u16 = 8080;
const NODE_PORT_KIND: u32 = FE_KIND_NODE_PORT << FE_KIND_SHIFT;

/// A NodePort TCP service with one backend (POD_A).
fn tcp_service(t: &mut TestDatapath) {
    install_service(
        &mut t.maps,
        frontend_key(NODE, NODE_PORT, PROTO_TCP, SCOPE_EXTERNAL),
        7,
        0,
        NODE_PORT_KIND,
        &[(1, backend(POD_A, POD_PORT, PROTO_TCP))],
    );
}

#[test]
fn tcp_syn_is_dnated_and_creates_both_ct_entries() {
    let mut t = TestDatapath::load();
    tcp_service(&mut t);
    let payload = b"hello, service";
    let frame = tcp_frame(CLIENT, 40000, NODE, NODE_PORT, true, payload);

    let (action, out) = t.run_xdp(&frame);

    assert_eq!(action, XDP_PASS);
    assert_eq!(out.len(), frame.len());
    let p = check_frame(&out);
    assert_eq!((p.src, p.sport), (CLIENT, 40000), "source untouched");
    assert_eq!(
        (p.dst, p.dport),
        (POD_A, POD_PORT),
        "destination translated"
    );
    assert_eq!(p.payload, payload);
    assert_eq!(out[..14], frame[..14], "Ethernet header untouched");

    let conns = t.maps.connections().unwrap();
    assert_eq!(conns.len(), 2, "{conns:?}");
    let orig = conns
        .iter()
        .find(|(k, _)| k.is_original())
        .expect("original entry");
    assert_eq!(
        orig.0,
        Ct4Key::original(flow(CLIENT, 40000, NODE, NODE_PORT, PROTO_TCP))
    );
    assert_eq!(
        (orig.1.nat_addr_be, orig.1.nat_port_be),
        (be32(POD_A), be16(POD_PORT))
    );
    assert_eq!((orig.1.backend_id, orig.1.service_id), (1, 7));
    assert!(orig.1.created_s > 0 && orig.1.last_seen_s == orig.1.created_s);
    assert_eq!(orig.1.state, lb_common::ct::CT_SYN_SENT);
    let reply = conns
        .iter()
        .find(|(k, _)| k.is_reply())
        .expect("reply entry");
    assert_eq!(
        reply.0,
        Ct4Key::reply(flow(POD_A, POD_PORT, CLIENT, 40000, PROTO_TCP))
    );
    assert_eq!(
        (reply.1.nat_addr_be, reply.1.nat_port_be),
        (be32(NODE), be16(NODE_PORT))
    );
    assert_eq!(t.nonzero_stats(), vec![(Reason::DnatNew, 1)]);
}

/// What userspace reads back from the entries the datapath wrote (through
/// lb-common's helpers, as `lb conntrack` and the purge do): both name the
/// client's flow and its backend.
#[test]
fn both_entries_read_back_as_the_client_s_flow_and_its_backend() {
    let mut t = TestDatapath::load();
    tcp_service(&mut t);
    t.run_xdp(&tcp_frame(CLIENT, 40000, NODE, NODE_PORT, true, b""));
    let conns = t.maps.connections().unwrap();
    assert_eq!(conns.len(), 2);
    for (key, value) in &conns {
        assert_eq!(
            key.original_flow(value),
            Some(flow(CLIENT, 40000, NODE, NODE_PORT, PROTO_TCP)),
            "{key:?}"
        );
        assert_eq!(
            key.backend(value),
            Some(Endpoint4::new(be32(POD_A), be16(POD_PORT))),
            "{key:?}"
        );
    }
}

#[test]
fn established_flow_keeps_its_backend_after_the_table_changes() {
    let mut t = TestDatapath::load();
    tcp_service(&mut t);
    let (_, out) = t.run_xdp(&tcp_frame(CLIENT, 40001, NODE, NODE_PORT, true, b""));
    assert_eq!(check_frame(&out).dst, POD_A);

    // The service moves wholly to POD_B: new backend and table, then the flip.
    install_service(
        &mut t.maps,
        frontend_key(NODE, NODE_PORT, PROTO_TCP, SCOPE_EXTERNAL),
        7,
        1,
        NODE_PORT_KIND,
        &[(2, backend(POD_B, POD_PORT, PROTO_TCP))],
    );
    // Age the entries (the refresh is per second): the packet must renew them.
    t.maps
        .rewrite_connections(|_, v| v.last_seen_s = v.last_seen_s.saturating_sub(5))
        .unwrap();
    let before = ct_entry(&t, CLIENT, 40001).last_seen_s;
    let (action, out) = t.run_xdp(&tcp_frame(
        CLIENT,
        40001,
        NODE,
        NODE_PORT,
        false,
        b"more data",
    ));
    assert_eq!(action, XDP_PASS);
    let p = check_frame(&out);
    assert_eq!(
        (p.dst, p.dport),
        (POD_A, POD_PORT),
        "the established flow stays on its backend"
    );
    assert_eq!(p.payload, b"more data");
    assert!(
        ct_entry(&t, CLIENT, 40001).last_seen_s > before,
        "last_seen refreshed"
    );

    // A new flow follows the new table.
    let (_, out) = t.run_xdp(&tcp_frame(CLIENT, 40002, NODE, NODE_PORT, true, b""));
    assert_eq!(check_frame(&out).dst, POD_B);
    assert_eq!(
        t.nonzero_stats(),
        vec![(Reason::DnatNew, 2), (Reason::DnatEstablished, 1)]
    );
}

#[test]
fn udp_with_checksum_is_dnated() {
    let mut t = TestDatapath::load();
    install_service(
        &mut t.maps,
        frontend_key(NODE, 30053, PROTO_UDP, SCOPE_EXTERNAL),
        9,
        2,
        NODE_PORT_KIND,
        &[(3, backend(POD_A, 53, PROTO_UDP))],
    );
    let frame = udp_frame(CLIENT, 5353, NODE, 30053, b"dns query bytes", true);
    let (action, out) = t.run_xdp(&frame);
    assert_eq!(action, XDP_PASS);
    let p = check_frame(&out);
    assert_ne!(p.l4_checksum, 0);
    assert_eq!((p.src, p.sport, p.dst, p.dport), (CLIENT, 5353, POD_A, 53));
    assert_eq!(p.payload, b"dns query bytes");
    assert_eq!(t.nonzero_stats(), vec![(Reason::DnatNew, 1)]);
}

#[test]
fn udp_without_checksum_keeps_it_zero() {
    let mut t = TestDatapath::load();
    install_service(
        &mut t.maps,
        frontend_key(NODE, 30053, PROTO_UDP, SCOPE_EXTERNAL),
        9,
        2,
        NODE_PORT_KIND,
        &[(3, backend(POD_A, 53, PROTO_UDP))],
    );
    let frame = udp_frame(CLIENT, 5353, NODE, 30053, b"no checksum", false);
    let (action, out) = t.run_xdp(&frame);
    assert_eq!(action, XDP_PASS);
    let p = check_frame(&out);
    assert_eq!(p.l4_checksum, 0, "a zero UDP checksum stays zero");
    assert_eq!((p.dst, p.dport), (POD_A, 53));
}

#[test]
fn udp_checksum_that_becomes_zero_is_sent_as_ffff() {
    // Search a source port for which the translated datagram's checksum
    // computes to zero, so the RFC 768 rule (send 0xffff) is exercised.
    let mut t = TestDatapath::load();
    install_service(
        &mut t.maps,
        frontend_key(NODE, 30053, PROTO_UDP, SCOPE_EXTERNAL),
        9,
        2,
        NODE_PORT_KIND,
        &[(3, backend(POD_A, 53, PROTO_UDP))],
    );
    let sport = (1024..=u16::MAX)
        .find(|&sport| {
            let translated = udp_frame(CLIENT, sport, POD_A, 53, b"x", true);
            u16::from_be_bytes([translated[40], translated[41]]) == 0xffff
        })
        .expect("some port gives a zero checksum");
    let (_, out) = t.run_xdp(&udp_frame(CLIENT, sport, NODE, 30053, b"x", true));
    let p = check_frame(&out);
    assert_eq!(p.l4_checksum, 0xffff);
    assert_eq!(p.dst, POD_A);
}

#[test]
fn packet_for_no_service_passes_untouched() {
    let mut t = TestDatapath::load();
    tcp_service(&mut t);
    // Right address, other port; right port, other address; other protocol.
    let frames = [
        tcp_frame(CLIENT, 40000, NODE, 22, true, b"ssh"),
        tcp_frame(
            CLIENT,
            40000,
            Ipv4Addr::new(192, 0, 2, 11),
            NODE_PORT,
            true,
            b"",
        ),
        udp_frame(CLIENT, 40000, NODE, NODE_PORT, b"udp to a tcp port", true),
    ];
    for frame in &frames {
        let (action, out) = t.run_xdp(frame);
        assert_eq!(action, XDP_PASS);
        assert_eq!(&out, frame, "byte-identical");
    }
    // An internal-scope frontend does not apply to external traffic.
    install_service(
        &mut t.maps,
        frontend_key(Ipv4Addr::new(10, 96, 0, 10), 80, PROTO_TCP, SCOPE_INTERNAL),
        8,
        3,
        0,
        &[(4, backend(POD_B, 80, PROTO_TCP))],
    );
    let frame = tcp_frame(CLIENT, 40000, Ipv4Addr::new(10, 96, 0, 10), 80, true, b"");
    let (action, out) = t.run_xdp(&frame);
    assert_eq!((action, &out), (XDP_PASS, &frame));
    assert_eq!(t.nonzero_stats(), vec![(Reason::PassNoService, 4)]);
    assert!(t.maps.connections().unwrap().is_empty());
}

#[test]
fn non_ipv4_passes_untouched() {
    let t = TestDatapath::load();
    // ARP request.
    let mut arp = Vec::new();
    arp.extend_from_slice(&[0xff; 6]);
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&CLIENT.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&NODE.octets());
    // IPv6 TCP.
    let builder = etherparse::PacketBuilder::ethernet2(CLIENT_MAC, NODE_MAC)
        .ipv6(
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            64,
        )
        .tcp(40000, 80, 1, 1000);
    let mut ipv6 = Vec::new();
    builder.write(&mut ipv6, b"v6").unwrap();
    for frame in [&arp, &ipv6] {
        let (action, out) = t.run_xdp(frame);
        assert_eq!(action, XDP_PASS);
        assert_eq!(&out, frame);
    }
    assert_eq!(t.nonzero_stats(), vec![(Reason::PassNotIpv4, 2)]);
}

#[test]
fn malformed_packets_pass_untouched() {
    let mut t = TestDatapath::load();
    tcp_service(&mut t);
    let good = tcp_frame(CLIENT, 40000, NODE, NODE_PORT, true, b"payload");
    let udp_good = udp_frame(CLIENT, 40000, NODE, NODE_PORT, b"payload", true);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("Ethernet header only", good[..14].to_vec()),
        ("IPv4 header cut", good[..14 + 12].to_vec()),
        ("TCP header cut", good[..14 + 20 + 10].to_vec()),
        ("UDP header cut", udp_good[..14 + 20 + 4].to_vec()),
    ];
    let mut ihl4 = good.clone();
    ihl4[14] = 0x44;
    cases.push(("ihl < 5", ihl4));
    let mut version6 = good.clone();
    version6[14] = 0x65;
    cases.push(("IPv4 ethertype, version 6", version6));
    let mut too_long = good.clone();
    let tot_len = u16::from_be_bytes([too_long[16], too_long[17]]) + 1;
    too_long[16..18].copy_from_slice(&tot_len.to_be_bytes());
    cases.push(("total length larger than the packet", too_long));
    let mut ihl_past_end = good[..14 + 20 + 20].to_vec();
    ihl_past_end[14] = 0x4f; // 60-byte header in a 40-byte datagram
    cases.push(("ihl beyond the packet", ihl_past_end));
    let mut short_tot = good.clone();
    short_tot[16..18].copy_from_slice(&30u16.to_be_bytes()); // 20 + 10: no room for TCP
    cases.push(("total length cuts the TCP header", short_tot));

    for (what, frame) in &cases {
        let (action, out) = t.run_xdp(frame);
        assert_eq!(action, XDP_PASS, "{what}");
        assert_eq!(&out, frame, "{what}: must not be rewritten");
    }
    assert_eq!(
        t.nonzero_stats(),
        vec![(Reason::PassMalformed, cases.len() as u64)]
    );
    assert!(t.maps.connections().unwrap().is_empty());
}

/// Later fragments whose first was not seen, with no node address known
/// (nothing lb serves on it: see kernel_fragments for the drop), pass
/// untouched, as does ICMP; first fragments are translated
/// (kernel_fragments).
#[test]
fn unseen_later_fragments_and_other_protocols_pass_untouched() {
    let mut t = TestDatapath::load();
    tcp_service(&mut t);
    let good = tcp_frame(CLIENT, 40000, NODE, NODE_PORT, true, b"payload");
    let with_frag = |frag: u16| {
        let mut f = good.clone();
        f[20..22].copy_from_slice(&frag.to_be_bytes());
        // Keep the header checksum valid: only the fragment field changes.
        f[24..26].copy_from_slice(&[0, 0]);
        let sum = ipv4_header_checksum(&f[14..34]);
        f[24..26].copy_from_slice(&sum.to_be_bytes());
        f
    };
    let frames = [with_frag(0x0010), with_frag(0x2000 | 0x0010)];
    for frame in &frames {
        let (action, out) = t.run_xdp(frame);
        assert_eq!((action, &out), (XDP_PASS, frame));
    }
    // ICMP echo to the frontend address.
    let builder = etherparse::PacketBuilder::ethernet2(CLIENT_MAC, NODE_MAC)
        .ipv4(CLIENT.octets(), NODE.octets(), 64)
        .icmpv4_echo_request(1, 1);
    let mut icmp = Vec::new();
    builder.write(&mut icmp, b"ping").unwrap();
    let (action, out) = t.run_xdp(&icmp);
    assert_eq!((action, &out), (XDP_PASS, &icmp));
    assert_eq!(
        t.nonzero_stats(),
        vec![(Reason::PassFragment, 2), (Reason::PassOtherProtocol, 1)]
    );
}

#[test]
fn empty_frontend_rejects_or_drops() {
    let mut t = TestDatapath::load();
    // No endpoints at all: reject, as kube-proxy does.
    install_service(
        &mut t.maps,
        frontend_key(NODE, 30001, PROTO_TCP, SCOPE_EXTERNAL),
        1,
        0,
        NODE_PORT_KIND,
        &[],
    );
    install_service(
        &mut t.maps,
        frontend_key(NODE, 30001, PROTO_UDP, SCOPE_EXTERNAL),
        1,
        0,
        NODE_PORT_KIND,
        &[],
    );
    // Policy Local without a local endpoint: drop.
    install_service(
        &mut t.maps,
        frontend_key(NODE, 30002, PROTO_TCP, SCOPE_EXTERNAL),
        2,
        0,
        NODE_PORT_KIND | FE_FLAG_EMPTY_DROP,
        &[],
    );

    for frame in [
        tcp_frame(CLIENT, 40000, NODE, 30001, true, b"syn with data"),
        udp_frame(CLIENT, 40000, NODE, 30001, &[7u8; 1000], true),
        // A multi-buffer frame shrinks to the reply as well.
        udp_frame(CLIENT, 40000, NODE, 30001, &[7u8; 8000], true),
    ] {
        let (action, out) = t.run_xdp(&frame);
        assert_eq!(action, XDP_TX, "sent back out of the device");
        check_port_unreachable(&frame, &out);
    }

    let (action, _) = t.run_xdp(&tcp_frame(CLIENT, 40000, NODE, 30002, true, b""));
    assert_eq!(action, XDP_DROP);
    assert_eq!(
        t.nonzero_stats(),
        vec![
            (Reason::DropNoLocalEndpoint, 1),
            (Reason::RejectNoEndpoints, 3)
        ]
    );
    assert!(t.maps.connections().unwrap().is_empty());
}

#[test]
fn no_icmp_errors_to_senders_that_must_not_get_them() {
    let mut t = TestDatapath::load();
    install_service(
        &mut t.maps,
        frontend_key(NODE, 30001, PROTO_UDP, SCOPE_EXTERNAL),
        1,
        0,
        NODE_PORT_KIND,
        &[],
    );
    for src in [
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 251),
    ] {
        let (action, _) = t.run_xdp(&udp_frame(src, 5353, NODE, 30001, b"x", true));
        assert_eq!(action, XDP_DROP, "{src}");
    }
    assert_eq!(t.nonzero_stats(), vec![(Reason::RejectNoEndpoints, 3)]);
}

/// `out` must be an ICMP port unreachable from the frontend to the sender
/// of `frame`, quoting its IP header and first 8 transport bytes.
fn check_port_unreachable(frame: &[u8], out: &[u8]) {
    use etherparse::{
        Icmpv4Type, NetHeaders, PacketHeaders, TransportHeader, icmpv4::DestUnreachableHeader,
    };
    assert_eq!(out.len(), 14 + 20 + 8 + 28, "{out:02x?}");
    assert_eq!(out[0..6], frame[6..12], "to the sender's MAC");
    assert_eq!(out[6..12], frame[0..6], "from the MAC it was sent to");
    let h = PacketHeaders::from_ethernet_slice(out).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("{:?}", h.net)
    };
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    assert_eq!(
        (Ipv4Addr::from(ip.source), Ipv4Addr::from(ip.destination)),
        (NODE, CLIENT)
    );
    assert_eq!(ip.total_len, 56);
    let Some(TransportHeader::Icmpv4(icmp)) = &h.transport else {
        panic!("{:?}", h.transport)
    };
    assert_eq!(
        icmp.icmp_type,
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port)
    );
    let quoted = h.payload.slice();
    assert_eq!(
        quoted,
        &frame[14..14 + 28],
        "original IP header and 8 bytes quoted"
    );
    assert_eq!(
        icmp.checksum,
        icmp.icmp_type.calc_checksum(quoted),
        "ICMP checksum"
    );
}

#[test]
fn missing_backend_drops() {
    let mut t = TestDatapath::load();
    // A table naming backend 99, which was never written (a torn update).
    t.maps.write_table(0, &round_robin(&[99])).unwrap();
    t.maps
        .set_frontend(
            &frontend_key(NODE, NODE_PORT, PROTO_TCP, SCOPE_EXTERNAL),
            &lb_common::FrontendValue {
                service_id: 1,
                table_id: 0,
                backend_count: 1,
                flags: 0,
            },
        )
        .unwrap();
    let (action, _) = t.run_xdp(&tcp_frame(CLIENT, 40000, NODE, NODE_PORT, true, b""));
    assert_eq!(action, XDP_DROP);
    // A table id beyond the map.
    t.maps
        .set_frontend(
            &frontend_key(NODE, NODE_PORT, PROTO_TCP, SCOPE_EXTERNAL),
            &lb_common::FrontendValue {
                service_id: 1,
                table_id: 1_000_000,
                backend_count: 1,
                flags: 0,
            },
        )
        .unwrap();
    let (action, _) = t.run_xdp(&tcp_frame(CLIENT, 40000, NODE, NODE_PORT, true, b""));
    assert_eq!(action, XDP_DROP);
    assert_eq!(t.nonzero_stats(), vec![(Reason::DropBackendMissing, 2)]);
}

#[test]
fn flows_spread_by_the_shared_flow_hash() {
    // The kernel's choice must equal lb-common's flow_hash + maglev_slot, so
    // `lb trace` and every node agree with the datapath.
    let mut t = TestDatapath::load();
    let pods: Vec<Ipv4Addr> = (0..4).map(|i| Ipv4Addr::new(10, 244, 2, 10 + i)).collect();
    let backends: Vec<(u32, lb_common::Backend4)> = pods
        .iter()
        .enumerate()
        .map(|(i, a)| (10 + i as u32, backend(*a, POD_PORT, PROTO_TCP)))
        .collect();
    install_service(
        &mut t.maps,
        frontend_key(NODE, NODE_PORT, PROTO_TCP, SCOPE_EXTERNAL),
        3,
        5,
        0,
        &backends,
    );
    let table = round_robin(&[10, 11, 12, 13]);
    let mut seen = std::collections::BTreeSet::new();
    for sport in 41000..41064u16 {
        let (_, out) = t.run_xdp(&tcp_frame(CLIENT, sport, NODE, NODE_PORT, true, b""));
        let p = check_frame(&out);
        let h = lb_common::flow_hash::flow_hash4(
            be32(CLIENT),
            be32(NODE),
            be16(sport),
            be16(NODE_PORT),
            PROTO_TCP,
        );
        let id = table[lb_common::flow_hash::maglev_slot(h) as usize];
        assert_eq!(p.dst, pods[(id - 10) as usize], "sport {sport}");
        seen.insert(p.dst);
    }
    assert_eq!(seen.len(), 4, "64 flows reach all 4 backends");
}

#[test]
fn purge_removes_the_connections_of_removed_backends() {
    let mut t = TestDatapath::load();
    install_service(
        &mut t.maps,
        frontend_key(NODE, 30053, PROTO_UDP, SCOPE_EXTERNAL),
        9,
        2,
        0,
        &[
            (3, backend(POD_A, 53, PROTO_UDP)),
            (4, backend(POD_B, 53, PROTO_UDP)),
        ],
    );
    tcp_service(&mut t); // TCP to POD_A:8080: a different backend
    for sport in 20000..20016u16 {
        t.run_xdp(&udp_frame(CLIENT, sport, NODE, 30053, b"q", true));
    }
    t.run_xdp(&tcp_frame(CLIENT, 40000, NODE, NODE_PORT, true, b""));
    let conns = t.maps.connections().unwrap();
    assert_eq!(conns.len(), 34);
    let to_a = conns
        .iter()
        .filter(|(k, v)| k.proto == PROTO_UDP && k.is_original() && v.nat_addr_be == be32(POD_A))
        .count();
    assert!(
        to_a > 0 && to_a < 16,
        "both UDP backends used ({to_a} of 16 on A)"
    );

    let removed = t
        .maps
        .purge_connections_to(&[backend(POD_A, 53, PROTO_UDP)])
        .unwrap();
    assert_eq!(removed, 2 * to_a, "original and reply entries");
    let left = t.maps.connections().unwrap();
    assert_eq!(left.len(), 34 - 2 * to_a);
    assert!(left.iter().all(|(k, v)| !(k.proto == PROTO_UDP
        && ((k.is_original() && v.nat_addr_be == be32(POD_A))
            || (k.is_reply() && k.src_addr_be == be32(POD_A))))));
    assert_eq!(
        left.iter().filter(|(k, _)| k.proto == PROTO_TCP).count(),
        2,
        "TCP to POD_A:8080 is another backend and stays"
    );
    assert_eq!(
        t.maps
            .purge_connections_to(&[backend(POD_A, 53, PROTO_UDP)])
            .unwrap(),
        0
    );
}

/// Ethernet pads a short frame to its minimum: the bytes past the IPv4
/// total length are no part of the datagram, and a frame carrying them is
/// translated like any other (the parser's plain-packet path and its
/// general rules agree on it), its padding untouched.
#[test]
fn frames_padded_past_their_datagram_are_translated() {
    let mut t = TestDatapath::load();
    tcp_service(&mut t);
    let mut frame = tcp_frame(CLIENT, 40000, NODE, NODE_PORT, true, b"");
    frame.extend_from_slice(&[0; 6]);
    let (action, out) = t.run_xdp(&frame);
    assert_eq!(action, XDP_PASS);
    let datagram = 14 + usize::from(u16::from_be_bytes([out[16], out[17]]));
    let p = check_frame(&out[..datagram]);
    assert_eq!((p.dst, p.dport), (POD_A, POD_PORT));
    assert_eq!(out[datagram..], [0; 6], "padding untouched");
    assert_eq!(t.stat(Reason::DnatNew), 1);
}

#[test]
fn ip_options_are_skipped() {
    let mut t = TestDatapath::load();
    tcp_service(&mut t);
    // 8 bytes of options after the fixed header: the transport header moves.
    let plain = tcp_frame(CLIENT, 40000, NODE, NODE_PORT, true, b"with options");
    let frame = with_ip_options(&plain);
    check_frame(&frame);

    let (action, out) = t.run_xdp(&frame);
    assert_eq!(action, XDP_PASS);
    let p = check_frame(&out);
    assert_eq!((p.dst, p.dport), (POD_A, POD_PORT));
    assert_eq!(p.payload, b"with options");
    assert_eq!(out[34..42], frame[34..42], "options untouched");
}

#[test]
fn jumbo_frames_in_several_buffers_are_translated() {
    // 9000-byte frames do not fit one page: BPF_PROG_TEST_RUN hands a
    // frags-aware program a multi-buffer frame, the headers in the first.
    let mut t = TestDatapath::load();
    install_service(
        &mut t.maps,
        frontend_key(NODE, 30053, PROTO_UDP, SCOPE_EXTERNAL),
        9,
        2,
        NODE_PORT_KIND,
        &[(3, backend(POD_A, 53, PROTO_UDP))],
    );
    let payload: Vec<u8> = (0..8900u32).map(|i| (i % 251) as u8).collect();
    let frame = udp_frame(CLIENT, 5353, NODE, 30053, &payload, true);
    let (action, out) = t.run_xdp(&frame);
    assert_eq!(action, XDP_PASS);
    assert_eq!(out.len(), frame.len());
    let p = check_frame(&out);
    assert_eq!((p.dst, p.dport), (POD_A, 53));
    assert_eq!(p.payload, payload);
    assert_eq!(t.nonzero_stats(), vec![(Reason::DnatNew, 1)]);
}

/// A flow's tuple as a packet carries it.
fn flow(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, proto: u8) -> Flow4 {
    Flow4::new(
        Endpoint4::new(be32(src), be16(sport)),
        Endpoint4::new(be32(dst), be16(dport)),
        proto,
    )
}

fn ct_entry(t: &TestDatapath, client: Ipv4Addr, sport: u16) -> lb_common::Ct4Value {
    let key = Ct4Key::original(flow(client, sport, NODE, NODE_PORT, PROTO_TCP));
    t.maps
        .connections()
        .unwrap()
        .into_iter()
        .find(|(k, _)| *k == key)
        .expect("ct entry")
        .1
}
