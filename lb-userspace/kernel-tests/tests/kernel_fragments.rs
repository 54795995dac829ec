//! IPv4 fragments through the real programs: a datagram's later fragments
//! (no ports) are translated as its first one was, in both directions, by
//! the ports the first left in `lb_frag4_v1`. kube-proxy gets this from
//! netfilter, which reassembles before NAT (`nf_defrag_ipv4`) and NATs the
//! whole datagram; lb translates each fragment as Cilium does
//! (bpf/lib/ipv4.h, `ipv4_handle_fragmentation`), so the receiver
//! reassembles a datagram whose every fragment carries the same
//! translation. Each output's checksums are recomputed independently:
//! every fragment's IPv4 header, and the UDP checksum over the datagram
//! reassembled from the translated fragments.

mod common;

use std::net::Ipv4Addr;

use common::*;
use etherparse::Ipv4Header;
use lb::datapath::DatapathMaps as _;
use lb_common::{
    BE_FLAG_LOCAL, BE_FLAG_REMOTE, FE_KIND_NODE_PORT, FE_KIND_SHIFT, PROTO_UDP, SCOPE_EXTERNAL,
    frag::Frag4Key, reason::Reason, snat::FE_FLAG_MASQUERADE,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
/// Fragment payloads of a 1,500-byte MTU (a multiple of 8).
const CHUNK: usize = 1480;

/// `frame` (Ethernet, a 20-byte IPv4 header) cut into fragments of
/// `chunk` bytes of IP payload, IP id `id`, each with its IPv4 checksum.
fn fragments(frame: &[u8], id: u16, chunk: usize) -> Vec<Vec<u8>> {
    let (eth, ip, data) = (&frame[..14], &frame[14..34], &frame[34..]);
    data.chunks(chunk)
        .enumerate()
        .map(|(i, part)| {
            let offset = i * chunk;
            let more = offset + part.len() < data.len();
            let mut hdr = ip.to_vec();
            hdr[2..4].copy_from_slice(&((20 + part.len()) as u16).to_be_bytes());
            hdr[4..6].copy_from_slice(&id.to_be_bytes());
            let flags = if more { 0x2000 } else { 0 } | (offset / 8) as u16;
            hdr[6..8].copy_from_slice(&flags.to_be_bytes());
            set_ip_checksum(&mut hdr);
            [eth, &hdr, part].concat()
        })
        .collect()
}

fn set_ip_checksum(hdr: &mut [u8]) {
    hdr[10..12].copy_from_slice(&[0, 0]);
    let (parsed, _) = Ipv4Header::from_slice(hdr).unwrap();
    hdr[10..12].copy_from_slice(&parsed.calc_header_checksum().to_be_bytes());
}

/// A fragment's IPv4 header, its checksum checked.
fn checked_header(frame: &[u8]) -> Ipv4Header {
    let (ip, _) = Ipv4Header::from_slice(&frame[14..]).unwrap();
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "IPv4 checksum"
    );
    ip
}

/// The datagram the receiver reassembles from `frames` (in any order): the
/// first fragment's headers, every payload in place; its checksums checked.
fn reassembled(frames: &[Vec<u8>]) -> Checked {
    let mut parts: Vec<(usize, &[u8])> = frames
        .iter()
        .map(|f| {
            let ip = checked_header(f);
            (usize::from(ip.fragment_offset.value()) * 8, &f[34..])
        })
        .collect();
    parts.sort_by_key(|(offset, _)| *offset);
    let first = frames
        .iter()
        .find(|f| checked_header(f).fragment_offset.value() == 0)
        .expect("a first fragment");
    let ip = checked_header(first);
    for pair in frames.windows(2) {
        let (a, b) = (checked_header(&pair[0]), checked_header(&pair[1]));
        assert_eq!(
            (a.source, a.destination, a.identification),
            (b.source, b.destination, b.identification),
            "every fragment of a datagram carries the same addresses and id"
        );
    }
    let data: Vec<u8> = parts.iter().flat_map(|(_, d)| d.iter().copied()).collect();
    let mut hdr = first[14..34].to_vec();
    hdr[2..4].copy_from_slice(&((20 + data.len()) as u16).to_be_bytes());
    hdr[6..8].copy_from_slice(&[0, 0]);
    set_ip_checksum(&mut hdr);
    assert_eq!(ip.protocol.0, PROTO_UDP);
    check_frame(&[&first[..14], &hdr, &data].concat())
}

/// 3,000 bytes (the datagram): three fragments at a 1,500 MTU.
fn datagram(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, id: u16) -> Vec<Vec<u8>> {
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    fragments(
        &udp_frame(src, sport, dst, dport, &payload, true),
        id,
        CHUNK,
    )
}

fn node_ports() -> TestDatapath {
    let mut t = TestDatapath::load();
    tcp_and_udp_node_ports(&mut t, NODE, POD);
    t.maps.set_snat_address(Some(NODE)).unwrap();
    t
}

fn run_all_xdp(t: &TestDatapath, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .map(|f| {
            let (action, out) = t.run_xdp(f);
            assert_eq!(action, XDP_PASS);
            out
        })
        .collect()
}

fn run_all_tc(t: &TestDatapath, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .map(|f| {
            let (verdict, out) = t.run_tc(f);
            assert_eq!(verdict, TCX_NEXT);
            out
        })
        .collect()
}

/// Every fragment of a datagram to a NodePort goes to the pod: the first
/// creates the flow (its ports remembered under the datagram's key as
/// received), the later ones find the flow by them; the pod reassembles a
/// datagram with a valid UDP checksum (the first fragment's update covers
/// it). Fragments in any order after the first work the same.
#[test]
fn a_datagrams_fragments_to_a_node_port_all_reach_the_pod() {
    let t = node_ports();
    let frames = datagram(CLIENT, 40000, NODE, 30053, 0x1234);
    assert_eq!(frames.len(), 3);
    let order = [frames[0].clone(), frames[2].clone(), frames[1].clone()];
    let out = run_all_xdp(&t, &order);
    let p = reassembled(&out);
    assert_eq!((p.src, p.sport, p.dst, p.dport), (CLIENT, 40000, POD, 53));
    assert_eq!(p.payload.len(), 3000);
    for f in &out {
        let ip = checked_header(f);
        assert_eq!((ip.source, ip.destination), (CLIENT.octets(), POD.octets()));
    }
    assert_eq!(t.stat(Reason::DnatNew), 1);
    assert_eq!(t.stat(Reason::DnatEstablished), 2);
    let remembered = t.maps.fragments().unwrap();
    let key = Frag4Key::new(be32(CLIENT), be32(NODE), 0x1234u16.to_be(), PROTO_UDP);
    assert!(
        remembered
            .iter()
            .any(|(k, v)| *k == key && v.dst_port_be == be16(30053)),
        "{remembered:?}"
    );
}

/// A later fragment whose first was not seen cannot be translated as its
/// datagram will be: to the node's address it is a counted drop (Cilium's
/// DROP_FRAG_NOT_FOUND); to an address lb serves nothing on it passes as
/// before, untouched (the node's own or routed traffic).
#[test]
fn a_later_fragment_before_its_first_is_dropped() {
    let t = node_ports();
    let frames = datagram(CLIENT, 40000, NODE, 30053, 0x0042);
    let (action, _) = t.run_xdp(&frames[1]);
    assert_eq!(action, XDP_DROP);
    assert_eq!(t.stat(Reason::DropFragUnseen), 1);
    let elsewhere = datagram(CLIENT, 40000, Ipv4Addr::new(203, 0, 113, 99), 53, 0x0042);
    let (action, out) = t.run_xdp(&elsewhere[1]);
    assert_eq!((action, &out), (XDP_PASS, &elsewhere[1]));
    assert_eq!(t.stat(Reason::PassFragment), 1);
    // A datagram lb does not translate: its later fragments find their
    // ports, then no frontend, and pass untouched.
    let other = datagram(CLIENT, 40000, NODE, 22, 0x0043);
    for f in &other {
        let (action, out) = t.run_xdp(f);
        assert_eq!((action, &out), (XDP_PASS, f));
    }
    assert_eq!(t.stat(Reason::PassNoService), 3);
}

/// The pod's 3,000-byte reply leaves in fragments: tc egress translates
/// each back to the frontend (the first by its ports, the later ones by
/// the first's), so the client reassembles a reply from NODE:30053 with a
/// valid checksum.
#[test]
fn reply_fragments_at_tc_egress_are_translated_back() {
    let t = node_ports();
    run_all_xdp(&t, &datagram(CLIENT, 40000, NODE, 30053, 0x1234));
    let reply = datagram(POD, 53, CLIENT, 40000, 0x0777);
    let out = run_all_tc(&t, &reply);
    let p = reassembled(&out);
    assert_eq!(
        (p.src, p.sport, p.dst, p.dport),
        (NODE, 30053, CLIENT, 40000)
    );
    assert_eq!(t.stat(Reason::ReverseNat), 3);
    // A later reply fragment whose first was not seen leaves untouched.
    let unseen = datagram(POD, 53, CLIENT, 40000, 0x0778);
    let (verdict, out) = t.run_tc(&unseen[2]);
    assert_eq!((verdict, &out), (TCX_NEXT, &unseen[2]));
    assert_eq!(t.stat(Reason::PassFragment), 1);
}

fn masquerading(backend_flags: u8) -> TestDatapath {
    let mut t = TestDatapath::load();
    let mut pod = backend(POD, 5353, PROTO_UDP);
    pod.flags = backend_flags;
    install_service(
        &mut t.maps,
        frontend_key(NODE, 30054, PROTO_UDP, SCOPE_EXTERNAL),
        1,
        0,
        FE_KIND_NODE_PORT << FE_KIND_SHIFT | FE_FLAG_MASQUERADE,
        &[(1, pod)],
    );
    t.maps.set_snat_address(Some(NODE)).unwrap();
    t
}

/// The masqueraded request: every fragment leaves from NODE:port (one
/// port, the one the first fragment claimed) to the pod; the port.
fn masqueraded_request(t: &TestDatapath) -> u16 {
    let out = run_all_xdp(t, &datagram(CLIENT, 40000, NODE, 30054, 0x2222));
    let p = reassembled(&out);
    assert_eq!((p.src, p.dst, p.dport), (NODE, POD, 5353));
    for f in &out {
        let ip = checked_header(f);
        assert_eq!((ip.source, ip.destination), (NODE.octets(), POD.octets()));
    }
    p.sport
}

/// kube-proxy masquerades under policy Cluster (TestInternalExternalMasquerade
/// "external to NodePort"): a fragmented datagram is masqueraded whole, and
/// the remote pod's fragmented reply to NODE:port is translated back at
/// ingress (reverse SNAT), every fragment to the client from the frontend.
#[test]
fn a_masqueraded_flows_fragments_go_both_ways() {
    let t = masquerading(BE_FLAG_REMOTE);
    let port = masqueraded_request(&t);
    let out = run_all_xdp(&t, &datagram(POD, 5353, NODE, port, 0x3333));
    let p = reassembled(&out);
    assert_eq!(
        (p.src, p.sport, p.dst, p.dport),
        (NODE, 30054, CLIENT, 40000)
    );
    assert_eq!(t.stat(Reason::ReverseSnat), 3);
}

/// The same with the backend on this node: its fragmented reply enters on
/// the pods' device, where the pod hook translates every fragment back.
#[test]
fn a_local_pods_fragmented_reply_is_translated_by_the_pod_hook() {
    let mut t = masquerading(BE_FLAG_LOCAL);
    t.maps.set_masquerade_local_backends(true).unwrap();
    let port = masqueraded_request(&t);
    let out: Vec<Vec<u8>> = datagram(POD, 5353, NODE, port, 0x4444)
        .iter()
        .map(|f| {
            let (verdict, out) = t.dp().run_tc_pod_ingress(f).unwrap();
            assert_eq!(verdict, TCX_NEXT);
            out
        })
        .collect();
    let p = reassembled(&out);
    assert_eq!(
        (p.src, p.sport, p.dst, p.dport),
        (NODE, 30054, CLIENT, 40000)
    );
    assert_eq!(t.stat(Reason::ReverseSnat), 3);
}
