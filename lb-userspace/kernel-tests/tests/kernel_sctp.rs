//! SCTP through the real programs (this kernel has no SCTP sockets, so
//! crafted packets under BPF_PROG_TEST_RUN): an association's INIT, its
//! handshake and DATA through a NodePort (XDP ingress, a port rewrite) and
//! an externalIP on the Service's own port (an address-only rewrite), the
//! replies through tc egress, and a ClusterIP through the socket hooks'
//! decision (`lb_trace_socket`: XDP serves only external frontends, and
//! SCTP's connect() cannot run here). Every CRC32c is checked by this
//! file's own table-driven implementation, checked against RFC 3720's
//! vectors, independent of the datapath's update by linearity.
//!
//! Upstream rule: kube-proxy matches frontends on (address, `meta l4proto`,
//! `th dport`) for TCP, UDP and SCTP alike (nftables proxier's
//! `service-ips` and `service-nodeports` maps, iptables' `-p sctp`), and
//! its conntrack tracks SCTP associations (nf_conntrack_proto_sctp: an
//! INIT opens, a COOKIE ACK answering the COOKIE ECHO assures).

mod common;

use std::net::Ipv4Addr;

use common::*;
use etherparse::{IpNumber, NetHeaders, PacketHeaders};
use lb::datapath::DatapathMaps as _;
use lb_common::{
    BE_FLAG_REMOTE, FE_KIND_NODE_PORT, FE_KIND_SHIFT, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
    SCOPE_EXTERNAL, SCOPE_INTERNAL,
    ct::{CT_SCTP_COOKIE_ECHOED, CT_SCTP_COOKIE_WAIT, CT_SCTP_ESTABLISHED},
    reason::Reason,
    sctp::chunk,
    snat::{FE_FLAG_MASQUERADE, SNAT_PORT_MAX, SNAT_PORT_MIN},
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
const NODE_PORT: u16 = 30132;
const TARGET_PORT: u16 = 38412;
const VTAG: u32 = 0x5eed_0001;

/// CRC32c, table-driven (Sarwate), written apart from lb-common's.
fn crc32c(data: &[u8]) -> u32 {
    let table: Vec<u32> = (0..256u32)
        .map(|n| {
            (0..8).fold(n, |c, _| {
                if c & 1 != 0 {
                    0x82f6_3b78 ^ (c >> 1)
                } else {
                    c >> 1
                }
            })
        })
        .collect();
    !data.iter().fold(!0u32, |crc, &b| {
        table[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

#[test]
fn the_tests_crc32c_is_crc32c() {
    // RFC 3720 B.4, and the catalogue's check value.
    assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
    assert_eq!(crc32c(&(0..32).collect::<Vec<u8>>()), 0x46dd_794e);
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
}

/// An SCTP packet's bytes: the common header (CRC filled in) and `chunks`.
fn sctp_bytes(sport: u16, dport: u16, vtag: u32, chunks: &[u8]) -> Vec<u8> {
    let mut sctp = Vec::with_capacity(12 + chunks.len());
    sctp.extend_from_slice(&sport.to_be_bytes());
    sctp.extend_from_slice(&dport.to_be_bytes());
    sctp.extend_from_slice(&vtag.to_be_bytes());
    sctp.extend_from_slice(&[0; 4]);
    sctp.extend_from_slice(chunks);
    let crc = crc32c(&sctp);
    sctp[8..12].copy_from_slice(&crc.to_le_bytes());
    sctp
}

/// One chunk of `kind` with `value` (padded to four bytes).
fn chunk_of(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![kind, 0];
    out.extend_from_slice(&((4 + value.len()) as u16).to_be_bytes());
    out.extend_from_slice(value);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out
}

/// An INIT chunk (initiate tag, a_rwnd, streams, initial TSN).
fn init_chunk() -> Vec<u8> {
    let mut v = VTAG.to_be_bytes().to_vec();
    v.extend_from_slice(&65535u32.to_be_bytes());
    v.extend_from_slice(&[0, 1, 0, 1]);
    v.extend_from_slice(&1u32.to_be_bytes());
    chunk_of(chunk::INIT, &v)
}

/// A DATA chunk carrying `payload` (TSN, stream, sequence, PPID first).
fn data_chunk(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    v.extend_from_slice(payload);
    let mut c = chunk_of(chunk::DATA, &v);
    c[1] = 0x03; // beginning and end of a message
    c
}

fn sctp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, chunks: &[u8]) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ethernet2(CLIENT_MAC, NODE_MAC).ipv4(
        src.octets(),
        dst.octets(),
        64,
    );
    let sctp = sctp_bytes(sport, dport, VTAG, chunks);
    let mut out = Vec::new();
    builder.write(&mut out, IpNumber::SCTP, &sctp).unwrap();
    out
}

/// An SCTP packet as this file reads it, after checking the IPv4 header
/// checksum and the CRC32c.
#[derive(Debug, PartialEq)]
struct Sctp {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    crc: [u8; 4],
}

fn check_sctp(frame: &[u8]) -> Sctp {
    let h = PacketHeaders::from_ethernet_slice(frame).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("not IPv4: {:?}", h.net)
    };
    assert_eq!(ip.protocol, IpNumber::SCTP);
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "IPv4 header checksum"
    );
    let sctp = h.payload.slice();
    let mut zeroed = sctp.to_vec();
    zeroed[8..12].fill(0);
    assert_eq!(
        sctp[8..12],
        crc32c(&zeroed).to_le_bytes(),
        "CRC32c of the SCTP packet"
    );
    Sctp {
        src: Ipv4Addr::from(ip.source),
        dst: Ipv4Addr::from(ip.destination),
        sport: u16::from_be_bytes([sctp[0], sctp[1]]),
        dport: u16::from_be_bytes([sctp[2], sctp[3]]),
        crc: sctp[8..12].try_into().unwrap(),
    }
}

/// The state of the flow of client port `port` (both entries agree).
fn state(t: &TestDatapath, port: u16) -> u8 {
    let states: Vec<u8> = t
        .maps
        .connections()
        .unwrap()
        .into_iter()
        .filter(|(k, v)| {
            k.original_flow(v)
                .is_some_and(|f| u16::from_be(f.src.port_be) == port && f.proto == PROTO_SCTP)
        })
        .map(|(_, v)| v.state)
        .collect();
    assert_eq!(states.len(), 2, "both entries of the flow: {states:?}");
    assert_eq!(states[0], states[1]);
    states[0]
}

fn node_port(t: &mut TestDatapath) {
    install_service(
        &mut t.maps,
        frontend_key(NODE, NODE_PORT, PROTO_SCTP, SCOPE_EXTERNAL),
        1,
        0,
        0,
        &[(1, backend(POD, TARGET_PORT, PROTO_SCTP))],
    );
}

/// An association through a NodePort: the INIT translated to the pod's
/// port with a valid CRC32c, every reply translated back, the handshake
/// walking the kernel's SCTP states up to assured, and DATA both ways.
#[test]
fn an_association_through_a_node_port_is_translated_with_valid_crc32c() {
    let mut t = TestDatapath::load();
    node_port(&mut t);
    let to_node = |chunks: &[u8]| sctp_frame(CLIENT, 5000, NODE, NODE_PORT, chunks);
    let from_pod = |chunks: &[u8]| sctp_frame(POD, TARGET_PORT, CLIENT, 5000, chunks);
    let translated_in = Sctp {
        src: CLIENT,
        dst: POD,
        sport: 5000,
        dport: TARGET_PORT,
        crc: [0; 4],
    };
    let translated_out = Sctp {
        src: NODE,
        dst: CLIENT,
        sport: NODE_PORT,
        dport: 5000,
        crc: [0; 4],
    };
    let without_crc = |s: Sctp| Sctp { crc: [0; 4], ..s };

    let init = to_node(&init_chunk());
    let (action, out) = t.run_xdp(&init);
    assert_eq!(action, XDP_PASS);
    let seen = check_sctp(&out);
    assert_ne!(
        seen.crc,
        check_sctp(&init).crc,
        "a port rewrite changes the CRC"
    );
    assert_eq!(without_crc(seen), translated_in);
    let sctp = 14 + 20;
    assert_eq!(
        out[sctp + 4..sctp + 8],
        init[sctp + 4..sctp + 8],
        "the verification tag"
    );
    assert_eq!(out[sctp + 12..], init[sctp + 12..], "the chunks untouched");
    assert_eq!(state(&t, 5000), CT_SCTP_COOKIE_WAIT);
    assert_eq!(t.stat(Reason::DnatNew), 1);

    let (verdict, out) = t.run_tc(&from_pod(&chunk_of(chunk::INIT_ACK, &[7; 20])));
    assert_eq!(verdict, TCX_NEXT);
    assert_eq!(without_crc(check_sctp(&out)), translated_out);
    assert_eq!(state(&t, 5000), CT_SCTP_COOKIE_WAIT);

    let (_, out) = t.run_xdp(&to_node(&chunk_of(chunk::COOKIE_ECHO, &[9; 16])));
    assert_eq!(without_crc(check_sctp(&out)), translated_in);
    assert_eq!(state(&t, 5000), CT_SCTP_COOKIE_ECHOED);

    let (_, out) = t.run_tc(&from_pod(&chunk_of(chunk::COOKIE_ACK, &[])));
    assert_eq!(without_crc(check_sctp(&out)), translated_out);
    assert_eq!(state(&t, 5000), CT_SCTP_ESTABLISHED);
    assert_eq!(
        t.stat(Reason::CtPromoted),
        1,
        "assured, in the assured table"
    );

    // DATA of a whole MTU, both ways.
    let payload: Vec<u8> = (0..1400u32).map(|i| (i * 7) as u8).collect();
    let (_, out) = t.run_xdp(&to_node(&data_chunk(&payload)));
    assert_eq!(without_crc(check_sctp(&out)), translated_in);
    let (_, out) = t.run_tc(&from_pod(&data_chunk(&payload)));
    assert_eq!(without_crc(check_sctp(&out)), translated_out);
    assert_eq!(t.stat(Reason::DnatEstablished), 2);
    assert_eq!(t.stat(Reason::ReverseNat), 3);
}

/// An externalIP on the Service's own port: only the address changes, and
/// SCTP's CRC (which covers no IP header) stays byte for byte.
#[test]
fn an_address_only_rewrite_keeps_the_crc_as_it_was() {
    let mut t = TestDatapath::load();
    install_service(
        &mut t.maps,
        frontend_key(EXTERNAL_IP, TARGET_PORT, PROTO_SCTP, SCOPE_EXTERNAL),
        1,
        0,
        0,
        &[(1, backend(POD, TARGET_PORT, PROTO_SCTP))],
    );
    let init = sctp_frame(CLIENT, 5001, EXTERNAL_IP, TARGET_PORT, &init_chunk());
    let (action, out) = t.run_xdp(&init);
    assert_eq!(action, XDP_PASS);
    let seen = check_sctp(&out);
    assert_eq!((seen.dst, seen.dport), (POD, TARGET_PORT));
    assert_eq!(seen.crc, check_sctp(&init).crc);
    assert_eq!(out[14 + 20..], init[14 + 20..], "the SCTP packet unchanged");

    let reply = sctp_frame(
        POD,
        TARGET_PORT,
        CLIENT,
        5001,
        &chunk_of(chunk::INIT_ACK, &[1; 20]),
    );
    let (_, out) = t.run_tc(&reply);
    let seen = check_sctp(&out);
    assert_eq!((seen.src, seen.sport), (EXTERNAL_IP, TARGET_PORT));
    assert_eq!(seen.crc, check_sctp(&reply).crc);
}

/// TCP, UDP and SCTP frontends on one NodePort are three frontends, each
/// with its own backend; a protocol without a frontend there passes.
#[test]
fn same_port_tcp_udp_and_sctp_are_dispatched_independently() {
    let mut t = TestDatapath::load();
    let pods = [
        Ipv4Addr::new(10, 244, 1, 1),
        Ipv4Addr::new(10, 244, 1, 2),
        Ipv4Addr::new(10, 244, 1, 3),
    ];
    for (i, (proto, pod)) in [PROTO_TCP, PROTO_UDP, PROTO_SCTP]
        .into_iter()
        .zip(pods)
        .enumerate()
    {
        let id = i as u32 + 1;
        install_service(
            &mut t.maps,
            frontend_key(NODE, NODE_PORT, proto, SCOPE_EXTERNAL),
            id,
            id - 1,
            0,
            &[(id, backend(pod, 1000 + id as u16, proto))],
        );
    }
    let (_, out) = t.run_xdp(&tcp_frame(CLIENT, 6000, NODE, NODE_PORT, true, b""));
    let tcp = check_frame(&out);
    assert_eq!((tcp.dst, tcp.dport), (pods[0], 1001));
    let (_, out) = t.run_xdp(&udp_frame(CLIENT, 6000, NODE, NODE_PORT, b"q", true));
    let udp = check_frame(&out);
    assert_eq!((udp.dst, udp.dport), (pods[1], 1002));
    let (_, out) = t.run_xdp(&sctp_frame(CLIENT, 6000, NODE, NODE_PORT, &init_chunk()));
    let sctp = check_sctp(&out);
    assert_eq!((sctp.dst, sctp.dport), (pods[2], 1003));
    assert_eq!(t.stat(Reason::DnatNew), 3);

    // SCTP to a port where only TCP has a frontend.
    install_service(
        &mut t.maps,
        frontend_key(NODE, 30200, PROTO_TCP, SCOPE_EXTERNAL),
        4,
        3,
        0,
        &[(4, backend(pods[0], 80, PROTO_TCP))],
    );
    let stray = sctp_frame(CLIENT, 6001, NODE, 30200, &init_chunk());
    let (action, out) = t.run_xdp(&stray);
    assert_eq!((action, &out), (XDP_PASS, &stray));
    assert_eq!(t.stat(Reason::PassNoService), 1);
}

/// Chunks other than INIT of an unknown association create nothing and
/// pass untranslated (as TCP's non-SYN packets); a packet too short for a
/// chunk header is malformed, passed untouched.
#[test]
fn only_an_init_opens_an_sctp_flow() {
    let mut t = TestDatapath::load();
    node_port(&mut t);
    for c in [
        data_chunk(b"x"),
        chunk_of(chunk::COOKIE_ECHO, &[1; 8]),
        chunk_of(chunk::ABORT, &[]),
    ] {
        let frame = sctp_frame(CLIENT, 5002, NODE, NODE_PORT, &c);
        let (action, out) = t.run_xdp(&frame);
        assert_eq!((action, &out), (XDP_PASS, &frame));
    }
    assert_eq!(t.stat(Reason::PassCtNotOpening), 3);
    assert!(t.maps.connections().unwrap().is_empty());

    let short = sctp_frame(CLIENT, 5002, NODE, NODE_PORT, &[]);
    let (action, out) = t.run_xdp(&short);
    assert_eq!((action, &out), (XDP_PASS, &short));
    assert_eq!(t.stat(Reason::PassMalformed), 1);
}

/// An ABORT closes the association; the next INIT on the same ports opens
/// a new one.
#[test]
fn an_abort_closes_and_a_new_init_reopens() {
    let mut t = TestDatapath::load();
    node_port(&mut t);
    t.run_xdp(&sctp_frame(CLIENT, 5003, NODE, NODE_PORT, &init_chunk()));
    t.run_tc(&sctp_frame(
        POD,
        TARGET_PORT,
        CLIENT,
        5003,
        &chunk_of(chunk::ABORT, &[]),
    ));
    assert_eq!(state(&t, 5003), lb_common::ct::CT_CLOSED);
    let (_, out) = t.run_xdp(&sctp_frame(CLIENT, 5003, NODE, NODE_PORT, &init_chunk()));
    assert_eq!(check_sctp(&out).dst, POD);
    assert_eq!(state(&t, 5003), CT_SCTP_COOKIE_WAIT);
    assert_eq!(t.stat(Reason::DnatNew), 2);
}

/// A ClusterIP frontend (internal scope: the socket hooks serve it, XDP
/// does not) with a port change: the hooks' decision, run on a packet by
/// `lb_trace_socket` (what `lb trace --from pod --protocol sctp` runs), translates SCTP to the pod with a valid CRC32c. The
/// same ClusterIP arriving at XDP passes untranslated.
#[test]
fn a_cluster_ip_is_translated_by_the_socket_decision_with_valid_crc32c() {
    let mut t = TestDatapath::load();
    install_service(
        &mut t.maps,
        frontend_key(CLUSTER_IP, 80, PROTO_SCTP, SCOPE_INTERNAL),
        1,
        0,
        0,
        &[(1, backend(POD, TARGET_PORT, PROTO_SCTP))],
    );
    let init = sctp_frame(
        Ipv4Addr::new(10, 244, 2, 9),
        5004,
        CLUSTER_IP,
        80,
        &init_chunk(),
    );
    let tracer = lb::datapath::trace::Tracer::load(&t.pin_dir).unwrap();
    let outcome = tracer.trace_socket(&init, 77).unwrap();
    assert_eq!(outcome.action, XDP_PASS);
    let seen = check_sctp(&outcome.packet_out);
    assert_eq!((seen.dst, seen.dport, seen.sport), (POD, TARGET_PORT, 5004));
    assert_eq!(outcome.record.reason, Reason::SockConnect as u32);

    let (action, out) = t.run_xdp(&init);
    assert_eq!((action, &out), (XDP_PASS, &init));
    assert_eq!(t.stat(Reason::PassNoService), 1);
}

/// Upstream: kube-proxy masquerades external traffic to a NodePort of
/// policy Cluster whatever its protocol (the nftables `external-...` chain
/// jumps to `mark-for-masquerade` before any protocol match), so an SCTP
/// association to a pod on another node leaves from the node's address
/// and a port of the SNAT range, its source port's change folded into the
/// CRC32c; the pod's INIT ACK to that port comes back from the NodePort to
/// the client with a valid CRC32c again.
#[test]
fn a_masqueraded_association_leaves_from_the_node_address_with_valid_crc32c() {
    let mut t = TestDatapath::load();
    let remote = lb_common::Backend4 {
        flags: BE_FLAG_REMOTE,
        ..backend(POD, TARGET_PORT, PROTO_SCTP)
    };
    install_service(
        &mut t.maps,
        frontend_key(NODE, NODE_PORT, PROTO_SCTP, SCOPE_EXTERNAL),
        1,
        0,
        FE_KIND_NODE_PORT << FE_KIND_SHIFT | FE_FLAG_MASQUERADE,
        &[(1, remote)],
    );
    t.maps.set_snat_address(Some(NODE)).unwrap();

    let (action, out) = t.run_xdp(&sctp_frame(CLIENT, 5000, NODE, NODE_PORT, &init_chunk()));
    assert_eq!(action, XDP_PASS);
    let seen = check_sctp(&out);
    assert_eq!((seen.src, seen.dst, seen.dport), (NODE, POD, TARGET_PORT));
    assert!(
        (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&seen.sport),
        "{}",
        seen.sport
    );

    let ack = sctp_frame(
        POD,
        TARGET_PORT,
        NODE,
        seen.sport,
        &chunk_of(chunk::INIT_ACK, &[7; 20]),
    );
    let (action, out) = t.run_xdp(&ack);
    assert_eq!(action, XDP_PASS);
    let back = check_sctp(&out);
    assert_eq!(
        (back.src, back.sport, back.dst, back.dport),
        (NODE, NODE_PORT, CLIENT, 5000)
    );
    assert_eq!(t.stat(Reason::ReverseSnat), 1);
}

/// Issue 11 for SCTP: an association whose backend is gone (its pod no
/// longer listed) gets its DATA dropped (`drop_ct_backend_gone`), never
/// sent to the old address; a new INIT on the same ports chooses again.
#[test]
fn an_association_to_a_gone_backend_drops_data_and_an_init_chooses_again() {
    const OTHER: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 6);
    let mut t = TestDatapath::load();
    node_port(&mut t);
    t.run_xdp(&sctp_frame(CLIENT, 5010, NODE, NODE_PORT, &init_chunk()));
    install_service(
        &mut t.maps,
        frontend_key(NODE, NODE_PORT, PROTO_SCTP, SCOPE_EXTERNAL),
        1,
        1,
        0,
        &[(2, backend(OTHER, TARGET_PORT, PROTO_SCTP))],
    );
    t.maps.remove_backend(1).unwrap();
    let data = sctp_frame(CLIENT, 5010, NODE, NODE_PORT, &data_chunk(b"x"));
    let (action, _) = t.run_xdp(&data);
    assert_eq!(action, XDP_DROP);
    assert_eq!(t.stat(Reason::DropCtBackendGone), 1);
    let (_, out) = t.run_xdp(&sctp_frame(CLIENT, 5010, NODE, NODE_PORT, &init_chunk()));
    assert_eq!(check_sctp(&out).dst, OTHER);
    assert_eq!(t.stat(Reason::CtReselected), 1);
}
