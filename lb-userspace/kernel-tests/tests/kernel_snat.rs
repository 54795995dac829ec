//! Masquerade's decision through the real programs: the frontend flag the
//! plan sets (`FE_FLAG_MASQUERADE`) and the node address the agent writes
//! (`lb_snat_addr_v1`, through the real writer) reach the XDP program,
//! which records them in a trace; the packet's source is not rewritten yet
//! (the rewrite is not built: README, "Not built yet").

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use common::*;
use lb::{
    datapath::{DatapathMaps as _, trace::Tracer, trace::build_frame},
    model::Protocol,
};
use lb_common::{
    FE_FLAG_EMPTY_DROP, FE_KIND_NODE_PORT, FE_KIND_SHIFT, PROTO_TCP, PROTO_UDP, SCOPE_EXTERNAL,
    reason::Reason,
    snat::{FE_FLAG_MASQUERADE, TRACE_MASQUERADE},
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
const NODE_PORT: u32 = FE_KIND_NODE_PORT << FE_KIND_SHIFT;
/// TestInternalExternalMasquerade's svc1 (eTP Cluster) and svc2 (eTP Local).
const CLUSTER_PORT: u16 = 30001;
const LOCAL_PORT: u16 = 30002;

fn services(t: &mut TestDatapath, proto: u8) {
    install_service(
        &mut t.maps,
        frontend_key(NODE, CLUSTER_PORT, proto, SCOPE_EXTERNAL),
        1,
        0,
        NODE_PORT | FE_FLAG_MASQUERADE,
        &[(1, backend(POD, 8080, proto))],
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

#[test]
fn policy_cluster_traces_masquerade_to_the_node_address_policy_local_keeps_the_client() {
    for (proto, protocol) in [(PROTO_TCP, Protocol::Tcp), (PROTO_UDP, Protocol::Udp)] {
        let mut t = TestDatapath::load();
        services(&mut t, proto);
        t.maps.set_snat_address(Some(NODE)).unwrap();
        let tracer = Tracer::load(&t.pin_dir).unwrap();

        // "external to NodePort": masq true, to the node's address.
        let cluster = trace(&tracer, CLUSTER_PORT, protocol);
        assert_eq!(cluster.record.reason, Reason::DnatNew as u32);
        assert_ne!(cluster.record.steps & TRACE_MASQUERADE, 0, "{protocol}");
        assert_eq!(
            Ipv4Addr::from(cluster.record.snat_addr_be.to_ne_bytes()),
            NODE
        );
        // Not applied yet: the source is the client's.
        let out = check_frame(&cluster.packet_out);
        assert_eq!((out.src, out.dst, out.dport), (CLIENT, POD, 8080));

        // "external to NodePort with eTP:Local": masq false.
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
}

#[test]
fn the_real_program_is_unchanged_by_the_flag() {
    let mut t = TestDatapath::load();
    services(&mut t, PROTO_TCP);
    t.maps.set_snat_address(Some(NODE)).unwrap();
    let (action, out) = t.run_xdp(&tcp_frame(CLIENT, 40000, NODE, CLUSTER_PORT, true, b""));
    assert_eq!(action, 2, "XDP_PASS");
    let p = check_frame(&out);
    assert_eq!((p.src, p.sport, p.dst, p.dport), (CLIENT, 40000, POD, 8080));
    assert_eq!(t.maps.connections().unwrap().len(), 2);
}
