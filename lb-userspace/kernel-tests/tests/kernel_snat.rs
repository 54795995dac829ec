//! Masquerade (SNAT) through the real programs, with the frontend flag the
//! plan sets (`FE_FLAG_MASQUERADE`) and the node address the agent writes
//! (`lb_snat_addr_v1`), both through the real writer. Each test names the
//! kube-proxy rule it mirrors (pkg/proxy/nftables/proxier_test.go and
//! iptables/proxier_test.go: TestInternalExternalMasquerade,
//! TestExternalTrafficPolicyCluster/Local; the kernel's
//! `nf_nat_used_tuple` for port uniqueness).

mod common;

use std::{
    collections::HashSet,
    net::{Ipv4Addr, SocketAddrV4},
};

use common::*;
use lb::{
    datapath::{DatapathMaps as _, trace::Tracer, trace::build_frame},
    model::Protocol,
};
use lb_common::{
    BE_FLAG_LOCAL, BE_FLAG_REMOTE, CT_FLAG_SNAT, Ct4Key, Ct4Value, Endpoint4, FE_FLAG_EMPTY_DROP,
    FE_KIND_EXTERNAL_IP, FE_KIND_LOAD_BALANCER, FE_KIND_NODE_PORT, FE_KIND_SHIFT, Flow4, PROTO_TCP,
    PROTO_UDP, SCOPE_EXTERNAL,
    packet::tcp::{ACK, RST, SYN},
    reason::Reason,
    snat::{
        FE_FLAG_MASQUERADE, SNAT_PORT_MAX, SNAT_PORT_MIN, TRACE_MASQUERADE, TRACE_SNAT_APPLIED,
        TRACE_SNAT_LOCAL_BACKEND,
    },
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
const LB_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
const NODE_PORT: u32 = FE_KIND_NODE_PORT << FE_KIND_SHIFT;
/// TestInternalExternalMasquerade's svc1 (eTP Cluster) and svc2 (eTP Local).
const CLUSTER_PORT: u16 = 30001;
const LOCAL_PORT: u16 = 30002;

/// A backend whose EndpointSlice names another node.
fn remote(addr: Ipv4Addr, port: u16, proto: u8) -> lb_common::Backend4 {
    lb_common::Backend4 {
        flags: BE_FLAG_REMOTE,
        ..backend(addr, port, proto)
    }
}

fn services(t: &mut TestDatapath, proto: u8) {
    install_service(
        &mut t.maps,
        frontend_key(NODE, CLUSTER_PORT, proto, SCOPE_EXTERNAL),
        1,
        0,
        NODE_PORT | FE_FLAG_MASQUERADE,
        &[(1, remote(POD, 8080, proto))],
    );
    install_service(
        &mut t.maps,
        frontend_key(NODE, LOCAL_PORT, proto, SCOPE_EXTERNAL),
        2,
        1,
        NODE_PORT | FE_FLAG_EMPTY_DROP,
        &[(2, backend(POD, 8081, proto))],
    );
}

fn masquerading(proto: u8) -> TestDatapath {
    let mut t = TestDatapath::load();
    services(&mut t, proto);
    t.maps.set_snat_address(Some(NODE)).unwrap();
    t
}

fn ep(addr: Ipv4Addr, port: u16) -> Endpoint4 {
    Endpoint4::new(be32(addr), be16(port))
}

fn opening(proto: u8, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    if proto == PROTO_TCP {
        tcp_frame(src, sport, dst, dport, true, b"")
    } else {
        udp_frame(src, sport, dst, dport, b"query", true)
    }
}

/// The backend's first answer to CLIENT:40000's masqueraded flow, which
/// got `snat_port`.
fn reply_to(proto: u8, snat_port: u16) -> Vec<u8> {
    if proto == PROTO_TCP {
        tcp_flags_frame(POD, 8080, NODE, snat_port, SYN | ACK, b"")
    } else {
        udp_frame(POD, 8080, NODE, snat_port, b"answer", true)
    }
}

/// `out` goes back to CLIENT:40000 from the frontend, with valid
/// checksums, counted once as `reverse_snat`.
fn assert_back_to_the_client(t: &TestDatapath, out: &[u8]) {
    let p = check_frame(out);
    assert_eq!(
        (p.src, p.sport, p.dst, p.dport),
        (NODE, CLUSTER_PORT, CLIENT, 40000)
    );
    assert_eq!(t.stat(Reason::ReverseSnat), 1);
}

fn in_range(port: u16) -> bool {
    (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&port)
}

fn trace(tracer: &Tracer, port: u16, proto: Protocol) -> lb::datapath::trace::TraceOutcome {
    let frame = build_frame(
        SocketAddrV4::new(CLIENT, 40000),
        SocketAddrV4::new(NODE, port),
        proto,
    );
    tracer.trace_external(&frame).unwrap()
}

#[test]
fn the_real_writer_keeps_the_node_address() {
    let mut t = TestDatapath::load();
    assert_eq!(
        t.maps.snat_address().unwrap(),
        None,
        "none before the agent writes one"
    );
    t.maps.set_snat_address(Some(NODE)).unwrap();
    assert_eq!(t.maps.snat_address().unwrap(), Some(NODE));
    t.maps.set_snat_address(None).unwrap();
    assert_eq!(t.maps.snat_address().unwrap(), None);
}

/// TestInternalExternalMasquerade "external to NodePort" and "external to
/// LB", TestExternalTrafficPolicyCluster "external to external IP hits
/// both endpoints": masq true, so the backend sees node_addr:port, with
/// valid IPv4, TCP and UDP checksums (a UDP datagram without checksum
/// keeps none).
#[test]
fn masqueraded_node_port_lb_and_external_ip_leave_from_the_node_address() {
    for proto in [PROTO_TCP, PROTO_UDP] {
        let mut t = masquerading(proto);
        for (id, (addr, port, kind)) in [
            (LB_IP, 80, FE_KIND_LOAD_BALANCER),
            (EXTERNAL_IP, 80, FE_KIND_EXTERNAL_IP),
        ]
        .into_iter()
        .enumerate()
        {
            install_service(
                &mut t.maps,
                frontend_key(addr, port, proto, SCOPE_EXTERNAL),
                3 + id as u32,
                2 + id as u32,
                kind << FE_KIND_SHIFT | FE_FLAG_MASQUERADE,
                &[(3 + id as u32, remote(POD, 9000 + id as u16, proto))],
            );
        }
        for (dst, dport, backend_port) in [
            (NODE, CLUSTER_PORT, 8080),
            (LB_IP, 80, 9000),
            (EXTERNAL_IP, 80, 9001),
        ] {
            let (action, out) = t.run_xdp(&opening(proto, CLIENT, 40000, dst, dport));
            assert_eq!(action, XDP_PASS);
            let p = check_frame(&out);
            assert_eq!((p.src, p.dst, p.dport), (NODE, POD, backend_port), "{dst}");
            assert!(in_range(p.sport), "{}", p.sport);
        }
        if proto == PROTO_UDP {
            let frame = udp_frame(CLIENT, 40001, NODE, CLUSTER_PORT, b"q", false);
            let (_, out) = t.run_xdp(&frame);
            let p = check_frame(&out);
            assert_eq!((p.src, p.l4_checksum), (NODE, 0), "no checksum stays none");
        }
        assert_eq!(t.stat(Reason::DnatNew), 3 + u64::from(proto == PROTO_UDP));
    }
}

/// TestInternalExternalMasquerade "external to NodePort with eTP:Local"
/// (and TestExternalTrafficPolicyLocal "external to NodePort hits only
/// local endpoint"): masq false, the client's address is kept.
#[test]
fn policy_local_keeps_the_client() {
    for proto in [PROTO_TCP, PROTO_UDP] {
        let t = masquerading(proto);
        let (_, out) = t.run_xdp(&opening(proto, CLIENT, 40000, NODE, LOCAL_PORT));
        let p = check_frame(&out);
        assert_eq!((p.src, p.sport, p.dst, p.dport), (CLIENT, 40000, POD, 8081));
        let conns = t.maps.connections().unwrap();
        assert!(conns.iter().all(|(_, v)| !v.is_snat()), "{conns:?}");
    }
}

/// The reply of a masqueraded flow arrives addressed to node_addr:port
/// (conntrack's reverse of kube-proxy's `masquerade`): translated back at
/// ingress, destination the client, source the frontend; later packets of
/// the flow keep their port.
#[test]
fn the_reply_to_the_node_address_is_translated_back() {
    for proto in [PROTO_TCP, PROTO_UDP] {
        let t = masquerading(proto);
        let (_, out) = t.run_xdp(&opening(proto, CLIENT, 40000, NODE, CLUSTER_PORT));
        let snat_port = check_frame(&out).sport;
        let (action, out) = t.run_xdp(&reply_to(proto, snat_port));
        assert_eq!(action, XDP_PASS);
        assert_back_to_the_client(&t, &out);

        let next = if proto == PROTO_TCP {
            tcp_flags_frame(CLIENT, 40000, NODE, CLUSTER_PORT, ACK, b"data")
        } else {
            udp_frame(CLIENT, 40000, NODE, CLUSTER_PORT, b"again", true)
        };
        let (_, out) = t.run_xdp(&next);
        let p = check_frame(&out);
        assert_eq!((p.src, p.sport, p.dst), (NODE, snat_port, POD));
        assert_eq!(t.stat(Reason::DnatEstablished), 1);
        // A packet to an SNAT port that no flow holds is not translated.
        let stray = udp_frame(POD, 8080, NODE, SNAT_PORT_MIN, b"x", true);
        let (_, out) = t.run_xdp(&stray);
        assert_eq!(check_frame(&out).dst, NODE);
    }
}

/// Two clients with the same source port toward one backend never share a
/// translated tuple (the kernel's `nf_nat_used_tuple`): 200 clients, 200
/// distinct ports, each reply back to its own client.
#[test]
fn clients_with_one_source_port_get_distinct_snat_ports() {
    let t = masquerading(PROTO_UDP);
    let mut ports = HashSet::new();
    for i in 0..200u8 {
        let client = Ipv4Addr::new(198, 51, 101, i);
        let (_, out) = t.run_xdp(&opening(PROTO_UDP, client, 40000, NODE, CLUSTER_PORT));
        let p = check_frame(&out);
        assert!(in_range(p.sport));
        assert!(ports.insert(p.sport), "port {} shared", p.sport);
        let (_, out) = t.run_xdp(&udp_frame(POD, 8080, NODE, p.sport, b"a", true));
        assert_eq!(check_frame(&out).dst, client);
    }
}

/// Every port toward the backend taken: the new flow is a counted drop,
/// never a shared tuple, and no entry of the holders changes.
#[test]
fn port_exhaustion_is_a_counted_drop() {
    let mut t = TestDatapath::load_with(8, 65_536);
    services(&mut t, PROTO_TCP);
    t.maps.set_snat_address(Some(NODE)).unwrap();
    let backend = ep(POD, 8080);
    let holder = |port: u16| {
        let client = ep(Ipv4Addr::new(198, 51, 102, (port % 250) as u8), port);
        let value = Ct4Value {
            nat_addr_be: be32(NODE),
            nat_port_be: be16(CLUSTER_PORT),
            state: lb_common::ct::CT_ESTABLISHED,
            flags: CT_FLAG_SNAT,
            backend_id: 1,
            service_id: 1,
            created_s: u32::MAX / 2,
            last_seen_s: u32::MAX / 2,
            peer_addr_be: client.addr_be,
            peer_port_be: client.port_be,
            checked_gen: 0,
        };
        let key = Ct4Key::reply(Flow4::new(backend, ep(NODE, port), PROTO_TCP));
        (key, value)
    };
    for port in SNAT_PORT_MIN..=SNAT_PORT_MAX {
        let (key, value) = holder(port);
        // Half in each table: a try must see both.
        t.maps.set_connection(&key, &value, port % 2 == 0).unwrap();
    }
    let (action, _) = t.run_xdp(&opening(PROTO_TCP, CLIENT, 40000, NODE, CLUSTER_PORT));
    assert_eq!(action, XDP_DROP);
    assert_eq!(t.stat(Reason::DropSnatPortExhausted), 1);
    let conns = t.maps.connections().unwrap();
    assert_eq!(conns.len(), 4536, "nothing added");
    for (key, value) in conns {
        let port = u16::from_be(key.dst_port_be);
        assert_eq!(value, holder(port).1, "held port {port} unchanged");
    }
    // One port freed: the next SYN gets exactly that one.
    t.maps.remove_connection(&holder(62000).0).unwrap();
    let (action, out) = t.run_xdp(&opening(PROTO_TCP, CLIENT, 40001, NODE, CLUSTER_PORT));
    if action == XDP_PASS {
        assert_eq!(check_frame(&out).sport, 62000);
    } else {
        // 32 random tries may all miss the one free port of 4,536.
        assert_eq!(t.stat(Reason::DropSnatPortExhausted), 2);
    }
}

/// Under policy Cluster a backend on this node is masqueraded too
/// (kube-proxy's rule does not look at the endpoint: TestInternalExternalMasquerade
/// "external to NodePort" lists the local endpoint with masq true) once the
/// pod hook is attached (`--pod-device`): the pod's reply to node_addr:port
/// is translated back there, with valid checksums; any other packet of the
/// pods passes untouched and uncounted.
#[test]
fn a_local_backend_is_masqueraded_with_the_pod_hook() {
    for proto in [PROTO_TCP, PROTO_UDP] {
        let mut t = masquerading(proto);
        let mut local = backend(POD, 8080, proto);
        local.flags = BE_FLAG_LOCAL;
        t.maps.set_backend(1, &local).unwrap();
        t.maps.set_masquerade_local_backends(true).unwrap();
        assert!(t.maps.masquerades_local_backends().unwrap());
        let (_, out) = t.run_xdp(&opening(proto, CLIENT, 40000, NODE, CLUSTER_PORT));
        let p = check_frame(&out);
        assert_eq!((p.src, p.dst), (NODE, POD));
        assert_eq!(t.stat(Reason::SnatSkippedLocalBackend), 0);
        let (verdict, out) = t
            .dp()
            .run_tc_pod_ingress(&reply_to(proto, p.sport))
            .unwrap();
        assert_eq!(verdict, TCX_NEXT);
        assert_back_to_the_client(&t, &out);
        // A pod's own traffic is none of the hook's business.
        let other = udp_frame(POD, 8080, Ipv4Addr::new(10, 244, 1, 6), 53, b"x", true);
        let (verdict, out) = t.dp().run_tc_pod_ingress(&other).unwrap();
        assert_eq!((verdict, out), (TCX_NEXT, other));
        assert_eq!(t.nonzero_stats().iter().map(|(_, n)| n).sum::<u64>(), 2);
    }
}

/// Without the pod hook, a backend on no node named (a slice without
/// nodeName: it may be a pod of this node) is not masqueraded either, so
/// a connection that worked unmasqueraded keeps working; with the hook,
/// it is (kube-proxy masquerades every endpoint under policy Cluster).
#[test]
fn a_backend_on_no_node_named_is_masqueraded_only_with_the_pod_hook() {
    let mut t = masquerading(PROTO_TCP);
    t.maps
        .set_backend(1, &backend(POD, 8080, PROTO_TCP))
        .unwrap();
    let (_, out) = t.run_xdp(&opening(PROTO_TCP, CLIENT, 40000, NODE, CLUSTER_PORT));
    assert_eq!(check_frame(&out).src, CLIENT);
    assert_eq!(t.stat(Reason::SnatSkippedLocalBackend), 1);
    t.maps.set_masquerade_local_backends(true).unwrap();
    let (_, out) = t.run_xdp(&opening(PROTO_TCP, CLIENT, 40001, NODE, CLUSTER_PORT));
    assert_eq!(check_frame(&out).src, NODE);
}

/// Without the pod hook, a backend on this node keeps the client's
/// address (no hook would translate its pod's replies back): counted and
/// traced, and the connection works as before.
#[test]
fn a_local_backend_keeps_the_client_without_the_pod_hook() {
    let mut t = masquerading(PROTO_TCP);
    let mut local = backend(POD, 8080, PROTO_TCP);
    local.flags = BE_FLAG_LOCAL;
    t.maps.set_backend(1, &local).unwrap();
    let (_, out) = t.run_xdp(&opening(PROTO_TCP, CLIENT, 40000, NODE, CLUSTER_PORT));
    let p = check_frame(&out);
    assert_eq!((p.src, p.sport, p.dst), (CLIENT, 40000, POD));
    assert_eq!(t.stat(Reason::SnatSkippedLocalBackend), 1);
    let (_, out) = t.run_tc(&tcp_flags_frame(POD, 8080, CLIENT, 40000, SYN | ACK, b""));
    assert_eq!(
        check_frame(&out).src,
        NODE,
        "tc egress translates the reply"
    );

    // A new connection's trace (the client's first one is established).
    let tracer = Tracer::load(&t.pin_dir).unwrap();
    let frame = build_frame(
        SocketAddrV4::new(CLIENT, 40001),
        SocketAddrV4::new(NODE, CLUSTER_PORT),
        Protocol::Tcp,
    );
    let outcome = tracer.trace_external(&frame).unwrap();
    assert_ne!(outcome.record.steps & TRACE_SNAT_LOCAL_BACKEND, 0);
    assert_eq!(outcome.record.steps & TRACE_SNAT_APPLIED, 0);
}

/// An evicted reply entry of a masqueraded flow is restored from its
/// original entry with the client and SNAT port it had (`ct/pair.rs`), so
/// the reply still reaches the client; a reset connection's SYN reusing the
/// tuple drops both old entries and claims a port afresh.
#[test]
fn a_masqueraded_flow_keeps_both_entries_consistent() {
    let mut t = masquerading(PROTO_TCP);
    let (_, out) = t.run_xdp(&opening(PROTO_TCP, CLIENT, 40000, NODE, CLUSTER_PORT));
    let port = check_frame(&out).sport;
    let reply_key = Ct4Key::reply(Flow4::new(ep(POD, 8080), ep(NODE, port), PROTO_TCP));
    assert_eq!(t.maps.remove_connection(&reply_key).unwrap(), 1);
    t.run_xdp(&tcp_flags_frame(
        CLIENT,
        40000,
        NODE,
        CLUSTER_PORT,
        ACK,
        b"",
    ));
    assert_eq!(t.stat(Reason::CtReplyRestored), 1);
    let restored = t.maps.connection(&reply_key).unwrap().expect("restored");
    assert_eq!(
        (restored.flags, restored.peer()),
        (CT_FLAG_SNAT, ep(CLIENT, 40000))
    );
    let (_, out) = t.run_xdp(&tcp_flags_frame(POD, 8080, NODE, port, ACK, b""));
    assert_eq!(check_frame(&out).dst, CLIENT);

    // Reset, then a new connection on the same client port.
    t.run_xdp(&tcp_flags_frame(
        CLIENT,
        40000,
        NODE,
        CLUSTER_PORT,
        RST,
        b"",
    ));
    let (_, out) = t.run_xdp(&opening(PROTO_TCP, CLIENT, 40000, NODE, CLUSTER_PORT));
    let new_port = check_frame(&out).sport;
    let conns = t.maps.connections().unwrap();
    assert_eq!(conns.len(), 2, "the old flow's two entries went: {conns:?}");
    assert!(
        conns
            .iter()
            .any(|(k, _)| k.is_reply() && u16::from_be(k.dst_port_be) == new_port)
    );
}

/// An eviction took a masqueraded flow's reply entry and another flow
/// claimed the port since: the first flow never goes on with that tuple
/// (its next ACK is dropped as stale, its next SYN claims a new port), and
/// the holder's entry is left alone.
#[test]
fn a_flow_whose_port_was_claimed_by_another_never_shares_it() {
    let mut t = masquerading(PROTO_TCP);
    let (_, out) = t.run_xdp(&opening(PROTO_TCP, CLIENT, 40000, NODE, CLUSTER_PORT));
    let port = check_frame(&out).sport;
    let reply_key = Ct4Key::reply(Flow4::new(ep(POD, 8080), ep(NODE, port), PROTO_TCP));
    let mut holder = t.maps.connection(&reply_key).unwrap().unwrap();
    (holder.peer_addr_be, holder.peer_port_be) = (be32(Ipv4Addr::new(198, 51, 100, 9)), be16(5));
    t.maps.remove_connection(&reply_key).unwrap();
    t.maps.set_connection(&reply_key, &holder, false).unwrap();

    let (action, _) = t.run_xdp(&tcp_flags_frame(
        CLIENT,
        40000,
        NODE,
        CLUSTER_PORT,
        ACK,
        b"",
    ));
    assert_eq!(action, XDP_DROP);
    assert_eq!(
        (t.stat(Reason::SnatPortLost), t.stat(Reason::DropCtStale)),
        (1, 1)
    );
    assert_eq!(t.maps.connection(&reply_key).unwrap(), Some(holder));
    let (_, out) = t.run_xdp(&opening(PROTO_TCP, CLIENT, 40000, NODE, CLUSTER_PORT));
    let again = check_frame(&out);
    assert_eq!(again.src, NODE);
    assert_ne!(again.sport, port, "a port of its own");
}

/// `lb trace` runs the real program: the decision (kube-proxy's rule), the
/// node's address and the port this connection would get, applied; policy
/// Local keeps the client.
#[test]
fn the_trace_names_the_address_and_the_port() {
    for (proto, protocol) in [(PROTO_TCP, Protocol::Tcp), (PROTO_UDP, Protocol::Udp)] {
        let t = masquerading(proto);
        let tracer = Tracer::load(&t.pin_dir).unwrap();

        let cluster = trace(&tracer, CLUSTER_PORT, protocol);
        assert_eq!(cluster.record.reason, Reason::DnatNew as u32);
        let steps = cluster.record.steps;
        assert_ne!(steps & TRACE_MASQUERADE, 0, "{protocol}");
        assert_ne!(steps & TRACE_SNAT_APPLIED, 0, "{protocol}");
        assert_eq!(
            Ipv4Addr::from(cluster.record.snat_addr_be.to_ne_bytes()),
            NODE
        );
        let port = u16::from_be(cluster.record.snat_port_be);
        assert!(in_range(port));
        let out = check_frame(&cluster.packet_out);
        assert_eq!(
            (out.src, out.sport, out.dst, out.dport),
            (NODE, port, POD, 8080)
        );
        assert!(
            t.maps.connections().unwrap().is_empty(),
            "a trace writes nothing"
        );

        let local = trace(&tracer, LOCAL_PORT, protocol);
        assert_eq!(local.record.reason, Reason::DnatNew as u32);
        assert_eq!(local.record.steps & TRACE_MASQUERADE, 0, "{protocol}");
        assert_eq!(local.record.snat_addr_be, 0);
    }
}

#[test]
fn no_node_address_no_masquerade() {
    let mut t = TestDatapath::load();
    services(&mut t, PROTO_TCP);
    let tracer = Tracer::load(&t.pin_dir).unwrap();
    let outcome = trace(&tracer, CLUSTER_PORT, Protocol::Tcp);
    assert_eq!(outcome.record.reason, Reason::DnatNew as u32);
    assert_eq!(outcome.record.steps & TRACE_MASQUERADE, 0);
    let (_, out) = t.run_xdp(&opening(PROTO_TCP, CLIENT, 40000, NODE, CLUSTER_PORT));
    assert_eq!(check_frame(&out).src, CLIENT);
}
