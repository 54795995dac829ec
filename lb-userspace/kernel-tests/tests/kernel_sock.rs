//! The cgroup sock_addr programs, end to end (the kernel has no
//! BPF_PROG_TEST_RUN for them): a cgroup made for the test, the programs
//! attached to it through `Datapath::attach_cgroup`, and a child process
//! (this test binary, re-executed) moved into it that talks to frontends on
//! loopback addresses. Nothing outside that cgroup is affected, and the
//! cgroup, links and pins are removed even when a test fails.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    process::Command,
    time::Duration,
};

use common::*;
use lb::datapath::{Attached, DatapathMaps as _, KernelMaps};
use lb_common::{
    FE_FLAG_EMPTY_DROP, PROTO_TCP, PROTO_UDP, SCOPE_EXTERNAL, SCOPE_INTERNAL, reason::Reason,
};

const FRONTEND: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 100);
const LOOPBACK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const TIMEOUT: Duration = Duration::from_secs(5);

const ENV_MODE: &str = "LB_SOCK_CHILD_MODE";
const ENV_CGROUP: &str = "LB_SOCK_CHILD_CGROUP";
const ENV_TARGET: &str = "LB_SOCK_CHILD_TARGET";

/// The child side: does nothing in a normal test run. Re-executed with the
/// environment above, it enters the cgroup, talks to the target and prints
/// `key=value` lines between markers.
#[test]
fn sock_child() {
    let Ok(mode) = std::env::var(ENV_MODE) else {
        return;
    };
    enter_cgroup(Path::new(&std::env::var(ENV_CGROUP).unwrap()));
    let target: SocketAddr = std::env::var(ENV_TARGET).unwrap().parse().unwrap();
    let mut out = Vec::new();
    match mode.as_str() {
        "tcp" => match TcpStream::connect_timeout(&target, TIMEOUT) {
            Ok(mut s) => {
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                out.push(format!("peer={}", s.peer_addr().unwrap()));
                s.write_all(b"ping").unwrap();
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf).unwrap();
                out.push(format!("reply={}", String::from_utf8_lossy(&buf)));
            }
            Err(e) => out.push(format!("errno={}", e.raw_os_error().unwrap_or(-1))),
        },
        "udp" => {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            match s.send_to(b"ping", target) {
                Ok(_) => {
                    let mut buf = [0u8; 16];
                    let (n, from) = s.recv_from(&mut buf).unwrap();
                    out.push(format!("from={from}"));
                    out.push(format!("reply={}", String::from_utf8_lossy(&buf[..n])));
                }
                Err(e) => out.push(format!("errno={}", e.raw_os_error().unwrap_or(-1))),
            }
        }
        "udp-connected" => {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            s.connect(target).unwrap();
            out.push(format!("peer={}", s.peer_addr().unwrap()));
            s.send(b"ping").unwrap();
            let mut buf = [0u8; 16];
            let (n, from) = s.recv_from(&mut buf).unwrap();
            out.push(format!("from={from}"));
            out.push(format!("reply={}", String::from_utf8_lossy(&buf[..n])));
        }
        other => panic!("unknown mode {other}"),
    }
    println!("<<<");
    for line in out {
        println!("{line}");
    }
    println!(">>>");
}

/// Runs `sock_child` in `cgroup` and returns its `key=value` lines.
fn run_child(cgroup: &Path, mode: &str, target: SocketAddr) -> Vec<(String, String)> {
    let exe = std::env::current_exe().unwrap();
    let output = Command::new(exe)
        .args([
            "sock_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ENV_MODE, mode)
        .env(ENV_CGROUP, cgroup)
        .env(ENV_TARGET, target.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let body = stdout
        .split("<<<\n")
        .nth(1)
        .and_then(|s| s.split(">>>").next())
        .expect("child output");
    body.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get<'a>(lines: &'a [(String, String)], key: &str) -> &'a str {
    lines
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {lines:?}"))
}

/// A datapath with its socket programs attached to a fresh cgroup.
/// Declared in this order so the cgroup goes first, then the datapath.
struct SockTest {
    cgroup: TestCgroup,
    t: TestDatapath,
}

impl SockTest {
    fn new() -> SockTest {
        let mut t = TestDatapath::load();
        let cgroup = TestCgroup::create();
        assert_eq!(
            t.dp_mut().attach_cgroup(&cgroup.path).unwrap(),
            Attached::New
        );
        SockTest { cgroup, t }
    }

    fn maps(&mut self) -> &mut KernelMaps {
        &mut self.t.maps
    }
}

#[test]
fn tcp_connect_to_a_frontend_reaches_the_backend() {
    let mut s = SockTest::new();
    let listener = TcpListener::bind((LOOPBACK, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    install_service(
        s.maps(),
        frontend_key(FRONTEND, 80, PROTO_TCP, SCOPE_INTERNAL),
        5,
        0,
        0,
        &[(1, backend(LOOPBACK, port, PROTO_TCP))],
    );
    let server = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(b"pong").unwrap();
        (buf, peer)
    });

    let lines = run_child(&s.cgroup.path, "tcp", SocketAddr::from((FRONTEND, 80)));

    let (got, peer) = server.join().unwrap();
    assert_eq!(&got, b"ping", "the backend received the child's data");
    assert_eq!(peer.ip(), std::net::IpAddr::V4(LOOPBACK));
    assert_eq!(
        get(&lines, "peer"),
        "127.0.0.100:80",
        "getpeername() reports the frontend"
    );
    assert_eq!(get(&lines, "reply"), "pong");
    assert_eq!(s.t.stat(Reason::SockConnect), 1);
    assert!(s.t.stat(Reason::SockGetpeernameRevnat) >= 1);
    let revnat = s.t.maps.socket_translations().unwrap();
    assert_eq!(revnat.len(), 1);
    let (k, v) = revnat[0];
    assert_eq!(
        (k.backend_addr_be, k.backend_port_be),
        (be32(LOOPBACK), be16(port))
    );
    assert_eq!(
        (v.frontend_addr_be, v.frontend_port_be, v.service_id),
        (be32(FRONTEND), be16(80), 5)
    );
    assert_ne!(k.cookie, 0);

    // Removing the backend purges the socket's reverse translation.
    assert_eq!(
        s.t.maps
            .purge_connections_to(&[backend(LOOPBACK, port, PROTO_TCP)])
            .unwrap(),
        1
    );
    assert!(s.t.maps.socket_translations().unwrap().is_empty());
}

#[test]
fn processes_outside_the_cgroup_are_left_alone() {
    let mut s = SockTest::new();
    let listener = TcpListener::bind((LOOPBACK, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    install_service(
        s.maps(),
        frontend_key(FRONTEND, 80, PROTO_TCP, SCOPE_INTERNAL),
        5,
        0,
        0,
        &[(1, backend(LOOPBACK, port, PROTO_TCP))],
    );
    // This test process is not in the cgroup: nothing listens on the
    // frontend address itself, so its connect() is refused.
    let err = TcpStream::connect_timeout(&SocketAddr::from((FRONTEND, 80)), TIMEOUT).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
    assert_eq!(s.t.stat(Reason::SockConnect), 0);
}

#[test]
fn external_scope_frontends_do_not_apply_to_sockets() {
    let mut s = SockTest::new();
    let listener = TcpListener::bind((LOOPBACK, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    install_service(
        s.maps(),
        frontend_key(FRONTEND, 80, PROTO_TCP, SCOPE_EXTERNAL),
        5,
        0,
        0,
        &[(1, backend(LOOPBACK, port, PROTO_TCP))],
    );
    let lines = run_child(&s.cgroup.path, "tcp", SocketAddr::from((FRONTEND, 80)));
    assert_eq!(get(&lines, "errno"), libc::ECONNREFUSED.to_string());
    assert_eq!(s.t.stat(Reason::SockConnect), 0);
}

fn udp_echo(socket: UdpSocket) -> std::thread::JoinHandle<SocketAddr> {
    std::thread::spawn(move || {
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        socket.send_to(b"pong", from).unwrap();
        from
    })
}

#[test]
fn udp_sendmsg_and_recvmsg_translate_both_ways() {
    let mut s = SockTest::new();
    let server = UdpSocket::bind((LOOPBACK, 0)).unwrap();
    let port = server.local_addr().unwrap().port();
    install_service(
        s.maps(),
        frontend_key(FRONTEND, 53, PROTO_UDP, SCOPE_INTERNAL),
        6,
        1,
        0,
        &[(2, backend(LOOPBACK, port, PROTO_UDP))],
    );
    let echo = udp_echo(server);

    let lines = run_child(&s.cgroup.path, "udp", SocketAddr::from((FRONTEND, 53)));

    assert_eq!(echo.join().unwrap().ip(), std::net::IpAddr::V4(LOOPBACK));
    assert_eq!(get(&lines, "reply"), "pong");
    assert_eq!(
        get(&lines, "from"),
        "127.0.0.100:53",
        "the reply appears to come from the frontend"
    );
    assert_eq!(s.t.stat(Reason::SockSendmsg), 1);
    assert_eq!(s.t.stat(Reason::SockRecvmsgRevnat), 1);
}

#[test]
fn connected_udp_translates_at_connect() {
    let mut s = SockTest::new();
    let server = UdpSocket::bind((LOOPBACK, 0)).unwrap();
    let port = server.local_addr().unwrap().port();
    install_service(
        s.maps(),
        frontend_key(FRONTEND, 53, PROTO_UDP, SCOPE_INTERNAL),
        6,
        1,
        0,
        &[(2, backend(LOOPBACK, port, PROTO_UDP))],
    );
    let echo = udp_echo(server);

    let lines = run_child(
        &s.cgroup.path,
        "udp-connected",
        SocketAddr::from((FRONTEND, 53)),
    );

    echo.join().unwrap();
    assert_eq!(get(&lines, "peer"), "127.0.0.100:53");
    assert_eq!(get(&lines, "from"), "127.0.0.100:53");
    assert_eq!(get(&lines, "reply"), "pong");
    assert_eq!(s.t.stat(Reason::SockConnect), 1);
}

#[test]
fn empty_frontend_refuses_the_connection() {
    let mut s = SockTest::new();
    install_service(
        s.maps(),
        frontend_key(FRONTEND, 80, PROTO_TCP, SCOPE_INTERNAL),
        5,
        0,
        0,
        &[],
    );
    install_service(
        s.maps(),
        frontend_key(FRONTEND, 81, PROTO_TCP, SCOPE_INTERNAL),
        6,
        0,
        FE_FLAG_EMPTY_DROP,
        &[],
    );
    install_service(
        s.maps(),
        frontend_key(FRONTEND, 53, PROTO_UDP, SCOPE_INTERNAL),
        7,
        0,
        0,
        &[],
    );

    let lines = run_child(&s.cgroup.path, "tcp", SocketAddr::from((FRONTEND, 80)));
    assert_eq!(get(&lines, "errno"), libc::ECONNREFUSED.to_string());
    let lines = run_child(&s.cgroup.path, "tcp", SocketAddr::from((FRONTEND, 81)));
    assert_eq!(get(&lines, "errno"), libc::ECONNREFUSED.to_string());
    let lines = run_child(&s.cgroup.path, "udp", SocketAddr::from((FRONTEND, 53)));
    assert_eq!(get(&lines, "errno"), libc::ECONNREFUSED.to_string());
    assert_eq!(s.t.stat(Reason::RejectNoEndpoints), 2);
    assert_eq!(s.t.stat(Reason::DropNoLocalEndpoint), 1);
}

#[test]
fn restarted_agent_replaces_programs_in_the_pinned_links() {
    let mut s = SockTest::new();
    let listener = TcpListener::bind((LOOPBACK, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    install_service(
        s.maps(),
        frontend_key(FRONTEND, 80, PROTO_TCP, SCOPE_INTERNAL),
        5,
        0,
        0,
        &[(1, backend(LOOPBACK, port, PROTO_TCP))],
    );
    let links = s.t.pin_dir.join("links");
    let pinned: Vec<_> = std::fs::read_dir(&links)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    // Four sock_addr links and the skb egress check.
    assert_eq!(pinned.len(), 5, "{pinned:?}");
    let egress_pin = pinned
        .iter()
        .find(|name| name.to_string_lossy().starts_with("lb_sock_egress@cgroup-"))
        .map(|name| links.join(name))
        .expect("the skb egress link is pinned");
    let (egress_prog, egress_target) = pinned_link_info(&egress_pin);

    // The "old agent" exits: its links stay attached through their pins.
    drop(s.t.dp.take());
    // A "new agent" loads against the same pins: maps are reused (the
    // service is still there) and programs are swapped into the links.
    let mut dp = lb::datapath::Datapath::load(&lb::datapath::LoadOptions {
        pin_dir: Some(s.t.pin_dir.clone()),
        max_tables: 8,
        ct_entries: 4096,
        ..lb::datapath::LoadOptions::default()
    })
    .unwrap();
    assert_eq!(
        dp.maps().unwrap().frontends().unwrap().len(),
        1,
        "pinned maps reused"
    );
    assert_eq!(
        dp.attach_cgroup(&s.cgroup.path).unwrap(),
        Attached::Replaced
    );
    let pinned_after: Vec<_> = std::fs::read_dir(&links)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(pinned_after.len(), 5);
    // The skb egress link (swapped by a raw BPF_LINK_UPDATE: aya has no
    // attach_to_link for it) runs the new program on the same cgroup.
    let (prog_after, target_after) = pinned_link_info(&egress_pin);
    assert_ne!(prog_after, egress_prog);
    assert_eq!(target_after, egress_target);
    drop(dp);

    // Still translating after both agents are gone.
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(b"pong").unwrap();
    });
    let lines = run_child(&s.cgroup.path, "tcp", SocketAddr::from((FRONTEND, 80)));
    server.join().unwrap();
    assert_eq!(get(&lines, "peer"), "127.0.0.100:80");
    assert_eq!(get(&lines, "reply"), "pong");
}

#[test]
fn mismatched_pinned_map_size_is_a_clear_error() {
    let t = TestDatapath::load_with(8, 4096);
    let err = lb::datapath::Datapath::load(&lb::datapath::LoadOptions {
        pin_dir: Some(t.pin_dir.clone()),
        max_tables: 16,
        ct_entries: 4096,
        ..lb::datapath::LoadOptions::default()
    })
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("lb_maglev_v2") && msg.contains("max_tables 8"),
        "{msg}"
    );
}
