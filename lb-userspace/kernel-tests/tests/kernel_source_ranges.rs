//! loadBalancerSourceRanges in the real programs: XDP under
//! BPF_PROG_TEST_RUN with the maps filled by the real plan and writer, the
//! socket hooks on a test cgroup. Each test names the kube-proxy rule it
//! mirrors (pkg/proxy/nftables/proxier.go: the `firewall-...` chain,
//! `ip saddr != { ranges } drop`, reached from the LoadBalancer IP's rule
//! only; iptables' `KUBE-FW-...` chain the same).

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket},
    time::Duration,
};

use common::*;
use lb::{
    datapath::{
        Attached, DatapathMaps as _,
        codec::{FrontendEntry, frontend_value},
        trace::{Tracer, build_frame},
    },
    desired,
    model::{FrontendKind, NodeFacts, Protocol, SourceRange, WhenEmpty},
    ops::{
        explain::{self, Entry},
        inspect::Inspector,
    },
    plan::{self, Applied},
    source::manifests,
};
use lb_common::{
    PROTO_TCP, PROTO_UDP, SCOPE_INTERNAL, TRACE_SOURCE_RANGE_ALLOWED, TRACE_SOURCE_RANGE_DENIED,
    reason::Reason,
};

const LB_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
const NODE_PORT: u16 = 30500;
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 150);

/// A LoadBalancer Service with ranges 203.0.113.0/25 and 10.0.0.0/8, its
/// one endpoint on this node, planned and applied for a node at `node`.
fn serve(t: &mut TestDatapath, applied: &mut Applied, node: Ipv4Addr) {
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: guarded, namespace: lb}}\nspec: {{type: LoadBalancer, clusterIP: 10.96.0.150, loadBalancerSourceRanges: [' 203.0.113.0/25', '10.0.0.0/8 '], ports: [{{name: http, port: 80, targetPort: 8080, nodePort: {NODE_PORT}}}]}}\nstatus: {{loadBalancer: {{ingress: [{{ip: {LB_IP}}}]}}}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: guarded-1, namespace: lb, labels: {{kubernetes.io/service-name: guarded}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [{POD}], nodeName: node-a}}]\n"
    );
    let set = manifests::parse_documents("guarded.yaml", &yaml);
    let facts = NodeFacts {
        name: "node-a".into(),
        addresses: vec![node.into()],
        zone: None,
    };
    let state = desired::compute(
        &set.services,
        &set.slices,
        &facts,
        &desired::Rules::default(),
        &desired::Holders::default(),
    );
    assert_eq!(state.problems, vec![]);
    let plan = plan::plan(&state, applied, t.maps.max_tables());
    assert_eq!(plan.problems, vec![], "{plan}");
    plan::apply(&plan, &mut t.maps, applied).unwrap();
}

/// What XDP does with a SYN from `src` to `dst:port`: the action, and the
/// destination it leaves with.
fn syn(t: &TestDatapath, src: Ipv4Addr, dst: Ipv4Addr, port: u16) -> (u32, Ipv4Addr) {
    let (action, out) = t.run_xdp(&tcp_frame(src, 41000, dst, port, true, b""));
    let dst = if action == XDP_PASS {
        check_frame(&out).dst
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    (action, dst)
}

/// Upstream: `ip saddr != { 203.0.113.0/25, ... } drop` in the Service's
/// firewall chain: the last address of the range passes and is
/// translated, the next one is dropped and counted, as are the addresses
/// around the range's start.
#[test]
fn a_source_just_inside_a_range_passes_and_just_outside_is_dropped() {
    let mut t = TestDatapath::load();
    serve(
        &mut t,
        &mut Applied::default(),
        Ipv4Addr::new(172, 16, 0, 5),
    );
    let inside = [[203, 0, 113, 0], [203, 0, 113, 127], [10, 255, 255, 255]];
    for addr in inside.map(Ipv4Addr::from) {
        assert_eq!(syn(&t, addr, LB_IP, 80), (XDP_PASS, POD), "{addr}");
    }
    let outside = [[203, 0, 113, 128], [203, 0, 112, 255], [11, 0, 0, 0]];
    for addr in outside.map(Ipv4Addr::from) {
        assert_eq!(syn(&t, addr, LB_IP, 80).0, XDP_DROP, "{addr}");
    }
    assert_eq!(t.stat(Reason::DropSourceRange), 3);
    assert_eq!(t.stat(Reason::DnatNew), 3);
    assert_eq!(t.maps.connections().unwrap().len(), 6, "3 flows, both ways");
}

/// Upstream `allowFromNode`: a range holding the node's IP lets the node
/// through (it is inside) and the LoadBalancer IP as a source too (a VIP
/// the node holds loops back with itself as the source). When no range
/// holds the node, the VIP as a source is dropped like any other (for new
/// connections: one already translated keeps going, as conntrack keeps
/// it past the firewall chain).
#[test]
fn the_node_s_own_address_and_allow_from_node() {
    let mut t = TestDatapath::load();
    let mut applied = Applied::default();
    let node = Ipv4Addr::new(10, 0, 0, 5);
    serve(&mut t, &mut applied, node);
    assert_eq!(syn(&t, node, LB_IP, 80), (XDP_PASS, POD));
    assert_eq!(syn(&t, LB_IP, LB_IP, 80), (XDP_PASS, POD));
    assert!(
        applied
            .source_ranges
            .iter()
            .any(|(_, r)| *r == SourceRange::host(LB_IP))
    );

    let elsewhere = Ipv4Addr::new(172, 16, 0, 5);
    serve(&mut t, &mut applied, elsewhere);
    assert!(
        !applied
            .source_ranges
            .iter()
            .any(|(_, r)| *r == SourceRange::host(LB_IP))
    );
    // A flow set up before keeps its translation (conntrack's, which
    // the firewall chain never sees again); a new one is dropped.
    assert_eq!(syn(&t, LB_IP, LB_IP, 80), (XDP_PASS, POD));
    let (action, _) = t.run_xdp(&tcp_frame(LB_IP, 41001, LB_IP, 80, true, b""));
    assert_eq!(action, XDP_DROP);
    assert_eq!(syn(&t, elsewhere, LB_IP, 80).0, XDP_DROP);
    assert_eq!(
        t.stat(Reason::DropSourceRange),
        2,
        "{:?}",
        t.nonzero_stats()
    );
}

/// Upstream: the firewall chain is reached from the LoadBalancer IP's
/// rule only; the Service's NodePort (`nodeport-ips`/KUBE-NODEPORTS) and
/// ClusterIP rules do not go through it. From a source outside every
/// range, the NodePort is translated (XDP) and the ClusterIP too (the
/// socket hooks' decision, run by `lb trace`), while the LoadBalancer IP
/// is refused on both paths, and the trace names the range decision.
#[test]
fn the_node_port_and_cluster_ip_of_the_same_service_are_not_filtered() {
    let mut t = TestDatapath::load();
    let node = Ipv4Addr::new(172, 16, 0, 5);
    serve(&mut t, &mut Applied::default(), node);
    let outsider = Ipv4Addr::new(198, 51, 100, 7);
    assert_eq!(syn(&t, outsider, node, NODE_PORT), (XDP_PASS, POD));
    assert_eq!(syn(&t, outsider, LB_IP, 80).0, XDP_DROP);

    let tracer = Tracer::load(&t.pin_dir).unwrap();
    let from = SocketAddrV4::new(outsider, 40000);
    let to = |addr, port| build_frame(from, SocketAddrV4::new(addr, port), Protocol::Tcp);
    let cluster_ip = tracer
        .trace_socket(&to(Ipv4Addr::new(10, 96, 0, 150), 80), 7)
        .unwrap();
    assert_eq!(cluster_ip.record.reason, Reason::SockConnect as u32);
    assert_eq!(cluster_ip.record.steps & TRACE_SOURCE_RANGE_DENIED, 0);
    let lb_ip = tracer.trace_socket(&to(LB_IP, 80), 7).unwrap();
    assert_eq!(lb_ip.record.reason, Reason::DropSourceRange as u32);
    assert_ne!(lb_ip.record.steps & TRACE_SOURCE_RANGE_DENIED, 0);
    let inside = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 40000);
    let frame = build_frame(inside, SocketAddrV4::new(LB_IP, 80), Protocol::Tcp);
    let external = tracer.trace_external(&frame).unwrap();
    assert_eq!(external.record.reason, Reason::DnatNew as u32);
    assert_ne!(external.record.steps & TRACE_SOURCE_RANGE_ALLOWED, 0);

    // `lb trace` names the decision; `lb service list` shows the ranges
    // on the LoadBalancer IP's frontends only.
    let inspector = Inspector::open(tracer.maps().unwrap()).unwrap();
    let report = explain::report(
        Entry::Pod,
        from,
        SocketAddrV4::new(LB_IP, 80),
        Protocol::Tcp,
        &lb_ip.record,
        &inspector,
    );
    assert_eq!(
        (report.verdict, report.reason, report.decided_by),
        ("drop", "drop_source_range", Some("source-ranges"))
    );
    let named = "loadBalancerSourceRanges: the socket's bound address 198.51.100.7 is outside";
    assert!(
        report.steps.iter().any(|s| s.starts_with(named)),
        "{:?}",
        report.steps
    );
    let services = inspector.services().unwrap();
    for fe in &services[0].frontends {
        let expected: &[&str] = match fe.kind {
            "load-balancer" => &["10.0.0.0/8", "203.0.113.0/25"],
            _ => &[],
        };
        assert_eq!(fe.source_ranges, expected, "{} {}", fe.kind, fe.scope);
    }
}

const FRONTEND: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 100);
const LOOPBACK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connect() whose SYNs are dropped waits (`SO_SNDTIMEO`).
const NO_ANSWER: Duration = Duration::from_secs(2);
const ENV_CGROUP: &str = "LB_RANGES_CHILD_CGROUP";
const ENV_TARGET: &str = "LB_RANGES_CHILD_TARGET";
const ENV_SOURCE: &str = "LB_RANGES_CHILD_SOURCE";

const ENV_UDP: &str = "LB_RANGES_CHILD_UDP";

/// The child side (a no-op in a normal run): in the cgroup, a TCP socket
/// bound to the given source (`0.0.0.0`: unbound) connects to the target
/// and prints the answer or the errno; with `ENV_UDP`, an unbound UDP
/// socket sends one datagram and prints `sent` or the errno.
#[test]
fn source_ranges_child() {
    let Ok(cgroup) = std::env::var(ENV_CGROUP) else {
        return;
    };
    enter_cgroup(std::path::Path::new(&cgroup));
    let target: SocketAddrV4 = std::env::var(ENV_TARGET).unwrap().parse().unwrap();
    if std::env::var_os(ENV_UDP).is_some() {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let said = match socket.send_to(b"ping", target) {
            Ok(_) => "sent".to_string(),
            Err(err) => format!("errno {}", err.raw_os_error().unwrap()),
        };
        println!("<<<{said}>>>");
        return;
    }
    let source: Ipv4Addr = std::env::var(ENV_SOURCE).unwrap().parse().unwrap();
    println!("<<<{}>>>", connect_from(source, target));
}

/// `socket(); bind(source); connect(target)`: the backend's answer, or
/// `errno N` (a connect() that sees no answer within `NO_ANSWER` gives
/// `EINPROGRESS`, from `SO_SNDTIMEO`).
fn connect_from(source: Ipv4Addr, target: SocketAddrV4) -> String {
    let sockaddr = |addr: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let len = size_of::<libc::sockaddr_in>() as u32;
    let timeout = libc::timeval {
        tv_sec: NO_ANSWER.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: plain socket calls on a socket this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let option = (&raw const timeout).cast();
        let option_len = size_of::<libc::timeval>() as u32;
        assert_eq!(
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, option, option_len),
            0
        );
        if !source.is_unspecified() {
            let local = sockaddr(SocketAddrV4::new(source, 0));
            assert_eq!(libc::bind(fd, (&raw const local).cast(), len), 0);
        }
        let remote = sockaddr(target);
        if libc::connect(fd, (&raw const remote).cast(), len) != 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap();
            libc::close(fd);
            return format!("errno {errno}");
        }
        let mut stream = <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd);
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.write_all(b"ping").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }
}

fn child_connects(cgroup: &std::path::Path, source: Ipv4Addr, target: SocketAddr) -> String {
    let env = [
        (ENV_CGROUP, cgroup.display().to_string()),
        (ENV_TARGET, target.to_string()),
        (ENV_SOURCE, source.to_string()),
    ];
    child_says("source_ranges_child", &env)
}

fn child_sends_udp(cgroup: &std::path::Path, target: SocketAddr) -> String {
    let env = [
        (ENV_CGROUP, cgroup.display().to_string()),
        (ENV_TARGET, target.to_string()),
        (ENV_UDP, "1".to_string()),
    ];
    child_says("source_ranges_child", &env)
}

/// A TCP server on loopback that answers `backend` to each of `connections`
/// connections; joined by the caller.
fn loopback_server(connections: usize) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind((LOOPBACK, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        for _ in 0..connections {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).unwrap();
            conn.write_all(b"backend").unwrap();
        }
    });
    (port, server)
}

/// A LoadBalancer frontend `FRONTEND:port` (internal scope: the socket
/// hooks) of Service port `service_id` whose one range is `allowed`, its
/// one backend `backend` (protocol `proto`).
fn guarded_frontend(
    t: &mut TestDatapath,
    service_id: u32,
    port: u16,
    proto: u8,
    allowed: SourceRange,
    backend_at: (Ipv4Addr, u16),
) {
    let flags = frontend_value(&FrontendEntry {
        service_id,
        table_id: service_id,
        backend_count: 1,
        kind: Some(FrontendKind::LoadBalancer),
        when_empty: WhenEmpty::Reject,
        affinity_timeout_s: 0,
        masquerade: false,
        source_ranges: true,
        algorithm: Default::default(),
    })
    .flags;
    t.maps.set_source_range(service_id, &allowed).unwrap();
    install_service(
        &mut t.maps,
        frontend_key(FRONTEND, port, proto, SCOPE_INTERNAL),
        service_id,
        service_id,
        flags,
        &[(service_id, backend(backend_at.0, backend_at.1, proto))],
    );
}

/// A datapath with its socket hooks attached to a test cgroup of its own.
fn with_socket_hooks() -> (TestDatapath, TestCgroup) {
    let mut t = TestDatapath::load();
    let cgroup = TestCgroup::create();
    assert_eq!(
        t.dp_mut().attach_cgroup(&cgroup.path).unwrap(),
        Attached::New
    );
    (t, cgroup)
}

/// Upstream: kube-proxy filters the node's own processes and pods too
/// (their packets to the LoadBalancer IP traverse the same firewall
/// chain, from OUTPUT or PREROUTING) and drops those outside; here
/// connect() of a process in the test cgroup whose socket is bound to a
/// source outside fails with EPERM (a netfilter drop of a local sender's
/// packet is EPERM too), and is translated when inside.
#[test]
fn a_process_connecting_from_outside_the_range_is_refused() {
    let (mut t, cgroup) = with_socket_hooks();
    let (port, server) = loopback_server(1);
    let allowed = SourceRange::new(Ipv4Addr::new(127, 0, 0, 0), 31).unwrap();
    guarded_frontend(&mut t, 3, 80, PROTO_TCP, allowed, (LOOPBACK, port));
    let target = SocketAddr::from((FRONTEND, 80));
    let eperm = format!("errno {}", libc::EPERM);
    assert_eq!(
        child_connects(&cgroup.path, Ipv4Addr::new(127, 0, 0, 2), target),
        eperm
    );
    assert_eq!(t.stat(Reason::DropSourceRange), 1);
    assert_eq!(
        child_connects(&cgroup.path, Ipv4Addr::new(127, 0, 0, 1), target),
        "backend"
    );
    server.join().unwrap();
    assert_eq!(t.stat(Reason::SockConnect), 1);
    drop(cgroup);
}

/// Upstream: the same firewall chain, for the sockets most pods and node
/// processes have: unbound, their source chosen by the kernel's route
/// after connect()/sendmsg() ran the hook. kube-proxy matches the routed
/// source (its chain sees the packet); so does `lb_sock_egress`, at the
/// socket's first packet to the backend: loopback's route source
/// 127.0.0.1 is inside 127.0.0.0/31 (translated, answered) and outside
/// 10.0.0.0/8 (the SYN is dropped at each try, so connect() sees no
/// answer, as under kube-proxy's drop; a UDP send fails with EPERM).
#[test]
fn an_unbound_socket_is_checked_by_the_source_its_route_gives() {
    let (mut t, cgroup) = with_socket_hooks();
    let (port, server) = loopback_server(1);
    let loopback = SourceRange::new(Ipv4Addr::new(127, 0, 0, 0), 31).unwrap();
    let elsewhere = SourceRange::new(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap();
    guarded_frontend(&mut t, 3, 80, PROTO_TCP, loopback, (LOOPBACK, port));
    guarded_frontend(&mut t, 4, 81, PROTO_TCP, elsewhere, (LOOPBACK, port));
    let unbound = Ipv4Addr::UNSPECIFIED;
    assert_eq!(
        child_connects(&cgroup.path, unbound, SocketAddr::from((FRONTEND, 80))),
        "backend"
    );
    server.join().unwrap();
    assert_eq!(t.stat(Reason::DropSourceRange), 0);
    assert_eq!(
        child_connects(&cgroup.path, unbound, SocketAddr::from((FRONTEND, 81))),
        format!("errno {}", libc::EINPROGRESS)
    );
    assert!(t.stat(Reason::DropSourceRange) >= 1);
    assert_eq!(t.stat(Reason::SockConnect), 2);

    let receiver = UdpSocket::bind((LOOPBACK, 0)).unwrap();
    receiver.set_read_timeout(Some(TIMEOUT)).unwrap();
    let udp_port = receiver.local_addr().unwrap().port();
    guarded_frontend(&mut t, 5, 53, PROTO_UDP, loopback, (LOOPBACK, udp_port));
    guarded_frontend(&mut t, 6, 54, PROTO_UDP, elsewhere, (LOOPBACK, udp_port));
    let dropped = t.stat(Reason::DropSourceRange);
    assert_eq!(
        child_sends_udp(&cgroup.path, SocketAddr::from((FRONTEND, 54))),
        format!("errno {}", libc::EPERM)
    );
    assert_eq!(t.stat(Reason::DropSourceRange), dropped + 1);
    assert_eq!(
        child_sends_udp(&cgroup.path, SocketAddr::from((FRONTEND, 53))),
        "sent"
    );
    let mut buf = [0u8; 8];
    let (len, _) = receiver.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"ping");
    drop(cgroup);
}
