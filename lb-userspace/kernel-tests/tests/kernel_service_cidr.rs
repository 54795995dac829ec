//! `--service-cidr` in the real programs: kube-proxy's nftables
//! `cluster-ips-check` chain (pkg/proxy/nftables/proxier.go), whose two
//! rules are
//!
//! - "Reject traffic to invalid ports of ClusterIPs": `ip daddr
//!   @cluster-ips reject` (every Service's ClusterIP, always), and
//! - "Drop traffic to unallocated ClusterIPs": `ip daddr { <service
//!   CIDRs> } drop` (only with service CIDRs),
//!
//! jumped to from `filter-forward` (traffic routed in from outside: XDP
//! here, under BPF_PROG_TEST_RUN with the maps written by the real plan)
//! and `filter-output` (the node's processes and pods: the socket hooks,
//! on a test cgroup, with loopback addresses written by the real writer).

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    time::Duration,
};

use common::*;
use etherparse::{Icmpv4Type, NetHeaders, PacketHeaders, TransportHeader, icmpv4};
use lb::{
    datapath::{Attached, DatapathMaps as _},
    desired::incremental::Changes,
    desired::{self, Rules},
    model::{NodeFacts, SourceRange},
    plan::{self, Applied, Planner},
    source::manifests,
};
use lb_common::{FE_KIND_CLUSTER_IP, FE_KIND_SHIFT, PROTO_TCP, SCOPE_INTERNAL, reason::Reason};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const UNALLOCATED: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 99);
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 7);

/// A ClusterIP Service (TCP 80) with one endpoint, planned and applied
/// by a planner started with `service_cidrs`.
fn serve(t: &mut TestDatapath, service_cidrs: &[&str]) {
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: lb}}\nspec: {{clusterIP: {CLUSTER_IP}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, namespace: lb, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [{POD}], nodeName: node-a}}]\n"
    );
    let set = manifests::parse_documents("web.yaml", &yaml);
    let facts = NodeFacts {
        name: "node-a".into(),
        addresses: vec![Ipv4Addr::new(192, 0, 2, 1).into()],
        zone: None,
    };
    let rules = Rules {
        service_cidrs: service_cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        ..Rules::default()
    };
    let state = desired::compute(
        &set.services,
        &set.slices,
        &facts,
        &rules,
        &desired::Holders::default(),
    );
    assert_eq!(state.problems, vec![]);
    let mut applied = Applied::read(&t.maps).unwrap();
    let mut planner = Planner::with_service_cidrs(rules.ipv4_service_cidrs());
    let all = Changes {
        all: true,
        ..Changes::default()
    };
    let plan = planner.plan(&state, &all, &applied, t.maps.max_tables());
    assert_eq!(plan.problems, vec![], "{plan}");
    plan::apply(&plan, &mut t.maps, &mut applied).unwrap();
}

/// The ICMP port unreachable XDP answered `frame` with, from `from`.
fn assert_port_unreachable(out: &[u8], from: Ipv4Addr) {
    let h = PacketHeaders::from_ethernet_slice(out).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("{:?}", h.net)
    };
    assert_eq!(
        (Ipv4Addr::from(ip.source), Ipv4Addr::from(ip.destination)),
        (from, CLIENT)
    );
    let Some(TransportHeader::Icmpv4(icmp)) = &h.transport else {
        panic!("{:?}", h.transport)
    };
    assert_eq!(
        icmp.icmp_type,
        Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port)
    );
}

/// Routed in from outside: the ClusterIP's other port and other protocol
/// are rejected, an unallocated address of the CIDR is dropped, the
/// exposed port and the addresses just outside the CIDR pass untouched.
#[test]
fn from_outside_unexposed_ports_are_rejected_and_unallocated_addresses_dropped() {
    let mut t = TestDatapath::load();
    serve(&mut t, &["10.96.0.0/12"]);
    assert_eq!(t.maps.cluster_ips().unwrap(), [CLUSTER_IP]);
    assert_eq!(
        t.maps.service_cidrs().unwrap(),
        [SourceRange::new(Ipv4Addr::new(10, 96, 0, 0), 12).unwrap()]
    );

    // "Reject traffic to invalid ports of ClusterIPs".
    for frame in [
        tcp_frame(CLIENT, 40000, CLUSTER_IP, 81, true, b""),
        udp_frame(CLIENT, 40000, CLUSTER_IP, 80, b"q", true),
    ] {
        let (action, out) = t.run_xdp(&frame);
        assert_eq!(action, XDP_TX);
        assert_port_unreachable(&out, CLUSTER_IP);
    }
    assert_eq!(t.stat(Reason::RejectClusterIpPort), 2);

    // "Drop traffic to unallocated ClusterIPs".
    let (action, _) = t.run_xdp(&tcp_frame(CLIENT, 40000, UNALLOCATED, 80, true, b""));
    assert_eq!(action, XDP_DROP);
    assert_eq!(t.stat(Reason::DropUnallocatedClusterIp), 1);

    // The exposed port is translated (kube-proxy DNATs a ClusterIP routed
    // to the node like any other: its `services` chain hangs off
    // nat-prerouting), and the first addresses outside 10.96.0.0/12 on
    // both sides pass untouched.
    let (action, out) = t.run_xdp(&tcp_frame(CLIENT, 40001, CLUSTER_IP, 80, true, b""));
    assert_eq!(action, XDP_PASS);
    assert_ne!(check_frame(&out).dst, CLUSTER_IP, "DNATed to its endpoint");
    assert_eq!(t.stat(Reason::DnatNew), 1);
    for dst in [
        (Ipv4Addr::new(10, 112, 0, 0), 80),
        (Ipv4Addr::new(10, 95, 255, 255), 80),
    ] {
        let frame = tcp_frame(CLIENT, 40001, dst.0, dst.1, true, b"");
        let (action, out) = t.run_xdp(&frame);
        assert_eq!((action, &out), (XDP_PASS, &frame), "{dst:?}");
    }
    assert_eq!(t.stat(Reason::PassNoService), 2);
    assert_eq!(t.stat(Reason::RejectClusterIpPort), 2);
    assert_eq!(t.stat(Reason::DropUnallocatedClusterIp), 1);
}

/// Without service CIDRs kube-proxy has no drop rule, but its reject rule
/// (the `cluster-ips` set) is always there.
#[test]
fn without_service_cidrs_only_the_reject_rule_holds() {
    let mut t = TestDatapath::load();
    serve(&mut t, &[]);
    assert!(t.maps.service_cidrs().unwrap().is_empty());
    let frame = tcp_frame(CLIENT, 40000, UNALLOCATED, 80, true, b"");
    let (action, out) = t.run_xdp(&frame);
    assert_eq!((action, &out), (XDP_PASS, &frame));
    let (action, _) = t.run_xdp(&tcp_frame(CLIENT, 40000, CLUSTER_IP, 81, true, b""));
    assert_eq!(action, XDP_TX);
    assert_eq!(
        t.nonzero_stats(),
        vec![(Reason::PassNoService, 1), (Reason::RejectClusterIpPort, 1)]
    );
}

// The socket hooks: loopback addresses (the desired state refuses
// loopback ClusterIPs, so these are written by the writer directly), a
// child process of this binary in a test cgroup.

const SOCK_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 5, 10);
const SOCK_UNALLOCATED: Ipv4Addr = Ipv4Addr::new(127, 0, 5, 99);
/// The first address past 127.0.5.0/24.
const SOCK_OUTSIDE: Ipv4Addr = Ipv4Addr::new(127, 0, 6, 0);
const TIMEOUT: Duration = Duration::from_secs(5);
const ENV_MODE: &str = "LB_CIDR_CHILD_MODE";
const ENV_CGROUP: &str = "LB_CIDR_CHILD_CGROUP";
const ENV_TARGET: &str = "LB_CIDR_CHILD_TARGET";

/// The child side: connects (tcp) or sends (udp) to the target from the
/// test cgroup and prints what happened.
#[test]
fn cidr_child() {
    let Ok(mode) = std::env::var(ENV_MODE) else {
        return;
    };
    enter_cgroup(Path::new(&std::env::var(ENV_CGROUP).unwrap()));
    let target: SocketAddr = std::env::var(ENV_TARGET).unwrap().parse().unwrap();
    let result = match mode.as_str() {
        "tcp" => TcpStream::connect_timeout(&target, TIMEOUT).map(|mut s| {
            s.write_all(b"ping").unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).unwrap();
            String::from_utf8_lossy(&buf).into_owned()
        }),
        "udp" => {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.send_to(b"ping", target).map(|_| "sent".to_owned())
        }
        other => panic!("unknown mode {other}"),
    };
    let said = match result {
        Ok(reply) => format!("ok {reply}"),
        Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
    };
    println!("<<<{said}>>>");
}

fn run_child(cgroup: &Path, mode: &str, target: SocketAddr) -> String {
    child_says(
        "cidr_child",
        &[
            (ENV_MODE, mode.to_owned()),
            (ENV_CGROUP, cgroup.display().to_string()),
            (ENV_TARGET, target.to_string()),
        ],
    )
}

/// A TCP server answering "pong" to one connection, on `addr`.
fn pong_server(addr: Ipv4Addr) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind((addr, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(b"pong").unwrap();
    });
    (port, server)
}

/// From the node's processes and pods: the ClusterIP's other port is
/// refused with ECONNREFUSED (what the reject's ICMP port unreachable gives
/// a TCP client), its other protocol too; an unallocated address of the
/// CIDR fails with EPERM (what a netfilter drop of a local sender's packet
/// gives), for TCP and UDP; the exposed port is translated and the first
/// address past the CIDR is left alone.
#[test]
fn from_the_node_unexposed_ports_are_refused_and_unallocated_addresses_forbidden() {
    let mut t = TestDatapath::load();
    let cgroup = TestCgroup::create();
    assert_eq!(
        t.dp_mut().attach_cgroup(&cgroup.path).unwrap(),
        Attached::New
    );
    let (backend_port, backend_server) = pong_server(Ipv4Addr::LOCALHOST);
    install_service(
        &mut t.maps,
        frontend_key(SOCK_CLUSTER_IP, 80, PROTO_TCP, SCOPE_INTERNAL),
        1,
        0,
        FE_KIND_CLUSTER_IP << FE_KIND_SHIFT,
        &[(1, backend(Ipv4Addr::LOCALHOST, backend_port, PROTO_TCP))],
    );
    t.maps.set_cluster_ip(SOCK_CLUSTER_IP).unwrap();
    t.maps
        .set_service_cidr(&SourceRange::new(Ipv4Addr::new(127, 0, 5, 0), 24).unwrap())
        .unwrap();

    let to = |addr: Ipv4Addr, port: u16| SocketAddr::from((addr, port));
    assert_eq!(
        run_child(&cgroup.path, "tcp", to(SOCK_CLUSTER_IP, 80)),
        "ok pong"
    );
    backend_server.join().unwrap();
    assert_eq!(
        run_child(&cgroup.path, "tcp", to(SOCK_CLUSTER_IP, 81)),
        "errno 111"
    );
    assert_eq!(
        run_child(&cgroup.path, "udp", to(SOCK_CLUSTER_IP, 80)),
        "errno 111"
    );
    assert_eq!(
        run_child(&cgroup.path, "tcp", to(SOCK_UNALLOCATED, 80)),
        "errno 1"
    );
    assert_eq!(
        run_child(&cgroup.path, "udp", to(SOCK_UNALLOCATED, 53)),
        "errno 1"
    );
    let (outside_port, outside_server) = pong_server(SOCK_OUTSIDE);
    assert_eq!(
        run_child(&cgroup.path, "tcp", to(SOCK_OUTSIDE, outside_port)),
        "ok pong"
    );
    outside_server.join().unwrap();
    assert_eq!(t.stat(Reason::SockConnect), 1);
    assert_eq!(t.stat(Reason::RejectClusterIpPort), 2);
    assert_eq!(t.stat(Reason::DropUnallocatedClusterIp), 2);
}

/// `lb trace` runs the same programs and names the upstream rule, for
/// external traffic and for the socket hooks.
#[test]
fn lb_trace_names_the_rule() {
    use lb::{
        datapath::trace::{Tracer, build_frame},
        model::Protocol,
        ops::{
            explain::{self, Entry},
            inspect::Inspector,
        },
    };
    use std::net::SocketAddrV4;

    let mut t = TestDatapath::load();
    serve(&mut t, &["10.96.0.0/12"]);
    let tracer = Tracer::load(&t.pin_dir).unwrap();
    let inspector = Inspector::open(tracer.maps().unwrap()).unwrap();
    let from = SocketAddrV4::new(CLIENT, 40000);
    for (entry, dst, verdict, reason, words) in [
        (
            Entry::External,
            SocketAddrV4::new(CLUSTER_IP, 81),
            "reject",
            Reason::RejectClusterIpPort,
            "Reject traffic to invalid ports of ClusterIPs",
        ),
        (
            Entry::Pod,
            SocketAddrV4::new(CLUSTER_IP, 81),
            "reject",
            Reason::RejectClusterIpPort,
            "ECONNREFUSED",
        ),
        (
            Entry::External,
            SocketAddrV4::new(UNALLOCATED, 80),
            "drop",
            Reason::DropUnallocatedClusterIp,
            "Drop traffic to unallocated ClusterIPs",
        ),
        (
            Entry::Node,
            SocketAddrV4::new(UNALLOCATED, 80),
            "drop",
            Reason::DropUnallocatedClusterIp,
            "EPERM",
        ),
    ] {
        let frame = build_frame(from, dst, Protocol::Tcp);
        let outcome = match entry {
            Entry::External => tracer.trace_external(&frame),
            _ => tracer.trace_socket(&frame, 7),
        }
        .unwrap();
        assert_eq!(outcome.record.reason, reason as u32, "{dst}");
        let report = explain::report(entry, from, dst, Protocol::Tcp, &outcome.record, &inspector);
        assert_eq!((report.verdict, report.reason), (verdict, reason.name()));
        let last = report.steps.last().unwrap();
        assert!(last.contains(words), "{last}");
    }
}
