//! `lb trace` against a live (pinned) datapath: the same object loaded again
//! in dry-run mode over the pinned maps, run with BPF_PROG_TEST_RUN. A trace
//! must report what the real program decides for the same packet and leave
//! every shared map exactly as it was. Also: the per-service counters of
//! the real programs, and that a normal load never pays for tracing.

mod common;

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
    process::Command,
    time::Duration,
};

use aya::{
    maps::{MapData, MapInfo},
    programs::Xdp,
};
use common::*;
use lb::{
    datapath::{
        Attached, DatapathMaps as _, KernelMaps,
        trace::{TraceOutcome, Tracer, build_frame},
    },
    model::Protocol,
};
use lb_common::{
    Ct4Key, Ct4Value, FE_FLAG_EMPTY_DROP, FE_KIND_CLUSTER_IP, FE_KIND_NODE_PORT, FE_KIND_SHIFT,
    FrontendValue, PROTO_TCP, PROTO_UDP, SCOPE_EXTERNAL, SCOPE_INTERNAL, ServiceCounters,
    SockRevNat4Key, SockRevNat4Value, TRACE_BACKEND, TRACE_CONNECTION, TRACE_FRONTEND,
    TRACE_MAGLEV, TRACE_SOCKET_HASH, TraceRecord,
    flow_hash::{flow_hash4, maglev_slot, socket_hash},
    reason::Reason,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const NODE_PORT: u16 = 30080;
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 9);
const POD_PORT: u16 = 8080;
const NODE_PORT_KIND: u32 = FE_KIND_NODE_PORT << FE_KIND_SHIFT;
const CLUSTER_IP_KIND: u32 = FE_KIND_CLUSTER_IP << FE_KIND_SHIFT;

fn pod(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, 10 + i)
}

/// Four backends, ids `first_id..first_id + 4`, on pods 0..4.
fn four_backends(first_id: u32, proto: u8) -> Vec<(u32, lb_common::Backend4)> {
    (0..4u8)
        .map(|i| (first_id + u32::from(i), backend(pod(i), POD_PORT, proto)))
        .collect()
}

fn ids(backends: &[(u32, lb_common::Backend4)]) -> Vec<u32> {
    backends.iter().map(|(id, _)| *id).collect()
}

fn v4(addr: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(addr, port)
}

/// Everything a trace must leave alone.
#[derive(Debug, PartialEq)]
struct Snapshot {
    connections: Vec<(Ct4Key, Ct4Value)>,
    sockets: Vec<(SockRevNat4Key, SockRevNat4Value)>,
    stats: Vec<(Reason, u64)>,
    services: Vec<(u32, ServiceCounters)>,
}

fn snapshot(maps: &KernelMaps, service_ids: &[u32]) -> Snapshot {
    let mut connections = maps.connections().unwrap();
    connections.sort_by_key(|(k, _)| *k);
    let mut sockets = maps.socket_translations().unwrap();
    sockets.sort_by_key(|(k, _)| *k);
    Snapshot {
        connections,
        sockets,
        stats: maps.stats().unwrap(),
        services: service_ids
            .iter()
            .map(|&id| (id, maps.service_counters(id).unwrap()))
            .collect(),
    }
}

fn counters(new_flows: u64, established: u64, rejected: u64, dropped: u64) -> ServiceCounters {
    ServiceCounters {
        new_flows,
        established,
        rejected,
        dropped,
    }
}

fn tracer(t: &TestDatapath) -> Tracer {
    Tracer::load(&t.pin_dir).expect("loading the tracer")
}

fn nat(outcome: &TraceOutcome) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::from(outcome.record.nat_addr_be.to_ne_bytes()),
        u16::from_be(outcome.record.nat_port_be),
    )
}

#[test]
fn nodeport_syn_trace_matches_the_real_program_and_changes_nothing() {
    let mut t = TestDatapath::load();
    let backends = four_backends(10, PROTO_TCP);
    install_service(
        &mut t.maps,
        frontend_key(NODE, NODE_PORT, PROTO_TCP, SCOPE_EXTERNAL),
        7,
        3,
        NODE_PORT_KIND,
        &backends,
    );
    // Some live state first: an established flow and non-zero counters.
    t.run_xdp(&tcp_frame(CLIENT, 39999, NODE, NODE_PORT, true, b""));
    t.run_xdp(&tcp_frame(CLIENT, 39999, NODE, NODE_PORT, false, b"x"));
    let first = snapshot(&t.maps, &[7]);
    assert_eq!(first.connections.len(), 2);
    assert_eq!(first.services, vec![(7, counters(1, 1, 0, 0))]);

    let tracer = tracer(&t);
    let table = round_robin(&ids(&backends));
    for sport in 41000..41016u16 {
        let before = snapshot(&t.maps, &[7]);
        let frame = build_frame(v4(CLIENT, sport), v4(NODE, NODE_PORT), Protocol::Tcp);
        let outcome = tracer.trace_external(&frame).unwrap();
        assert_eq!(outcome.action, XDP_PASS);
        let r = outcome.record;
        assert_eq!(r.steps, TRACE_FRONTEND | TRACE_MAGLEV | TRACE_BACKEND);
        assert_eq!(r.reason, Reason::DnatNew as u32);
        assert_eq!(
            r.frontend,
            FrontendValue {
                service_id: 7,
                table_id: 3,
                backend_count: 4,
                flags: NODE_PORT_KIND,
            }
        );
        let hash = flow_hash4(
            be32(CLIENT),
            be32(NODE),
            be16(sport),
            be16(NODE_PORT),
            PROTO_TCP,
        );
        assert_eq!(r.slot, maglev_slot(hash));
        assert_eq!(r.backend_id, table[r.slot as usize]);
        let expected = pod((r.backend_id - 10) as u8);
        assert_eq!(nat(&outcome), (expected, POD_PORT));
        // The output packet is the translated one.
        let p = check_frame(&outcome.packet_out);
        assert_eq!(
            (p.src, p.sport, p.dst, p.dport),
            (CLIENT, sport, expected, POD_PORT)
        );

        assert_eq!(
            snapshot(&t.maps, &[7]),
            before,
            "sport {sport}: maps untouched"
        );

        // The real program picks the very same backend for the same frame.
        let (action, out) = t.run_xdp(&frame);
        assert_eq!(action, XDP_PASS);
        assert_eq!(out, outcome.packet_out, "sport {sport}: same output packet");
        // Which did what a trace must not: entries and counters.
        let mut now = snapshot(&t.maps, &[7]);
        assert_eq!(
            now.services[0].1.new_flows,
            before.services[0].1.new_flows + 1
        );
        now.connections
            .retain(|(k, _)| !(k.src_port_be == be16(sport) || k.dst_port_be == be16(sport)));
        assert_eq!(now.connections, before.connections, "plus this flow's two");
    }
    assert_eq!(t.maps.connections().unwrap().len(), 2 + 2 * 16);
}

#[test]
fn established_flow_trace_reports_the_connection_entry() {
    let mut t = TestDatapath::load();
    let key = frontend_key(NODE, NODE_PORT, PROTO_TCP, SCOPE_EXTERNAL);
    install_service(
        &mut t.maps,
        key,
        7,
        0,
        NODE_PORT_KIND,
        &[(1, backend(pod(0), POD_PORT, PROTO_TCP))],
    );
    let (_, out) = t.run_xdp(&tcp_frame(CLIENT, 40001, NODE, NODE_PORT, true, b""));
    assert_eq!(check_frame(&out).dst, pod(0));
    // The service moves wholly to other backends; the old one's pod is
    // still listed (draining), so its backend stays.
    install_service(
        &mut t.maps,
        key,
        7,
        1,
        NODE_PORT_KIND,
        &four_backends(20, PROTO_TCP),
    );
    let before = snapshot(&t.maps, &[7]);

    let tracer = tracer(&t);
    let frame = tcp_frame(CLIENT, 40001, NODE, NODE_PORT, false, b"more");
    let outcome = tracer.trace_external(&frame).unwrap();
    assert_eq!(outcome.action, XDP_PASS);
    let r = outcome.record;
    assert_eq!(r.steps, TRACE_FRONTEND | TRACE_CONNECTION | TRACE_BACKEND);
    assert_eq!(r.reason, Reason::DnatEstablished as u32);
    assert_eq!(r.backend_id, 1, "the connection's backend, not the table's");
    assert_eq!(r.frontend.table_id, 1);
    assert_eq!(nat(&outcome), (pod(0), POD_PORT));
    assert_eq!(check_frame(&outcome.packet_out).dst, pod(0));
    assert_eq!(
        snapshot(&t.maps, &[7]),
        before,
        "last_seen not refreshed, nothing counted"
    );

    // The real program agrees (and does refresh and count).
    let (_, out) = t.run_xdp(&frame);
    assert_eq!(out, outcome.packet_out);
    assert_eq!(t.maps.service_counters(7).unwrap(), counters(1, 1, 0, 0));

    // Its pod no longer listed, the backend goes: the trace names the drop
    // (issue 11: never sent to an address that may be another pod's now).
    t.maps.remove_backend(1).unwrap();
    let outcome = tracer.trace_external(&frame).unwrap();
    assert_eq!(outcome.action, XDP_DROP);
    assert_eq!(outcome.record.reason, Reason::DropCtBackendGone as u32);
    let (action, _) = t.run_xdp(&frame);
    assert_eq!(action, XDP_DROP);
    assert_eq!(t.stat(Reason::DropCtBackendGone), 1);
}

#[test]
fn traces_of_empty_frontends_and_of_no_service() {
    let mut t = TestDatapath::load();
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
        frontend_key(NODE, 30002, PROTO_UDP, SCOPE_EXTERNAL),
        2,
        0,
        NODE_PORT_KIND | FE_FLAG_EMPTY_DROP,
        &[],
    );
    let before = snapshot(&t.maps, &[1, 2]);
    let tracer = tracer(&t);

    let reject = tracer
        .trace_external(&build_frame(
            v4(CLIENT, 40000),
            v4(NODE, 30001),
            Protocol::Tcp,
        ))
        .unwrap();
    assert_eq!(reject.action, XDP_TX, "answered with ICMP port unreachable");
    assert_eq!(reject.record.steps, TRACE_FRONTEND);
    assert_eq!(reject.record.reason, Reason::RejectNoEndpoints as u32);
    assert_eq!(reject.record.frontend.service_id, 1);
    assert_eq!(reject.packet_out.len(), 14 + 20 + 8 + 28, "the ICMP reply");

    let drop = tracer
        .trace_external(&build_frame(
            v4(CLIENT, 40000),
            v4(NODE, 30002),
            Protocol::Udp,
        ))
        .unwrap();
    assert_eq!(drop.action, XDP_DROP);
    assert_eq!(drop.record.steps, TRACE_FRONTEND);
    assert_eq!(drop.record.reason, Reason::DropNoLocalEndpoint as u32);
    assert_eq!(drop.record.frontend.service_id, 2);

    let frame = build_frame(v4(CLIENT, 40000), v4(NODE, 22), Protocol::Tcp);
    let pass = tracer.trace_external(&frame).unwrap();
    assert_eq!(pass.action, XDP_PASS);
    assert_eq!(pass.record.steps & TRACE_FRONTEND, 0);
    assert_eq!(
        pass.record,
        TraceRecord {
            reason: Reason::PassNoService as u32,
            ..TraceRecord::default()
        }
    );
    assert_eq!(pass.packet_out, frame, "untouched");

    assert_eq!(snapshot(&t.maps, &[1, 2]), before);
    assert!(t.nonzero_stats().is_empty());
}

#[test]
fn socket_trace_uses_the_cookie_hash_and_writes_nothing() {
    let mut t = TestDatapath::load();
    let tcp = four_backends(30, PROTO_TCP);
    let udp = four_backends(40, PROTO_UDP);
    install_service(
        &mut t.maps,
        frontend_key(CLUSTER_IP, 80, PROTO_TCP, SCOPE_INTERNAL),
        5,
        2,
        CLUSTER_IP_KIND,
        &tcp,
    );
    install_service(
        &mut t.maps,
        frontend_key(CLUSTER_IP, 53, PROTO_UDP, SCOPE_INTERNAL),
        6,
        4,
        CLUSTER_IP_KIND,
        &udp,
    );
    // External scope only: sockets do not see it.
    install_service(
        &mut t.maps,
        frontend_key(NODE, NODE_PORT, PROTO_TCP, SCOPE_EXTERNAL),
        7,
        5,
        NODE_PORT_KIND,
        &four_backends(50, PROTO_TCP),
    );
    install_service(
        &mut t.maps,
        frontend_key(CLUSTER_IP, 81, PROTO_TCP, SCOPE_INTERNAL),
        8,
        0,
        CLUSTER_IP_KIND,
        &[],
    );
    let before = snapshot(&t.maps, &[5, 6, 7, 8]);
    let tracer = tracer(&t);

    let mut seen = std::collections::BTreeSet::new();
    for (port, protocol, first_id, table_id, reason) in [
        (80, Protocol::Tcp, 30, 2, Reason::SockConnect),
        (53, Protocol::Udp, 40, 4, Reason::SockSendmsg),
    ] {
        let table = round_robin(&[first_id, first_id + 1, first_id + 2, first_id + 3]);
        for i in 0..32u64 {
            let cookie = 0x1_0000_0000 * i + 4096 + i * 7;
            let frame = build_frame(v4(POD, 45000), v4(CLUSTER_IP, port), protocol);
            let outcome = tracer.trace_socket(&frame, cookie).unwrap();
            assert_eq!(outcome.action, XDP_PASS);
            let r = outcome.record;
            assert_eq!(
                r.steps,
                TRACE_FRONTEND | TRACE_SOCKET_HASH | TRACE_MAGLEV | TRACE_BACKEND
            );
            assert_eq!(r.reason, reason as u32);
            assert_eq!(r.frontend.table_id, table_id);
            let slot = maglev_slot(socket_hash(cookie, be32(CLUSTER_IP), be16(port)));
            assert_eq!(r.slot, slot, "cookie {cookie:#x}");
            assert_eq!(r.backend_id, table[slot as usize]);
            let expected = pod((r.backend_id - first_id) as u8);
            assert_eq!(nat(&outcome), (expected, POD_PORT));
            let p = check_frame(&outcome.packet_out);
            assert_eq!((p.src, p.dst, p.dport), (POD, expected, POD_PORT));
            seen.insert((port, r.backend_id));
        }
    }
    assert_eq!(seen.len(), 8, "cookies spread over every backend: {seen:?}");

    // Empty frontend: the hooks refuse the connection.
    let refused = tracer
        .trace_socket(
            &build_frame(v4(POD, 45000), v4(CLUSTER_IP, 81), Protocol::Tcp),
            99,
        )
        .unwrap();
    assert_eq!(refused.action, XDP_DROP);
    assert_eq!(refused.record.steps, TRACE_FRONTEND);
    assert_eq!(refused.record.reason, Reason::RejectNoEndpoints as u32);

    // An external-scope frontend is no service for a socket.
    let pass = tracer
        .trace_socket(
            &build_frame(v4(POD, 45000), v4(NODE, NODE_PORT), Protocol::Tcp),
            99,
        )
        .unwrap();
    assert_eq!(pass.action, XDP_PASS);
    assert_eq!(pass.record.steps, 0);
    assert_eq!(pass.record.reason, Reason::PassNoService as u32);

    assert_eq!(snapshot(&t.maps, &[5, 6, 7, 8]), before);
    assert!(t.maps.socket_translations().unwrap().is_empty());
    assert!(t.nonzero_stats().is_empty());
}

#[test]
fn tracer_refuses_a_pin_dir_without_a_datapath() {
    ensure_bpffs();
    let missing = Path::new("/sys/fs/bpf").join(unique_name());
    let err = format!("{:#}", Tracer::load(&missing).unwrap_err());
    assert!(
        err.contains(&format!(
            "no lb datapath pinned at {}: is the agent running? (see `lb agent --pin-dir`)",
            missing.display()
        )),
        "{err}"
    );
    assert!(!missing.exists(), "nothing created");

    // An existing but empty directory: the same, and it stays empty.
    let empty = PinGuard(Path::new("/sys/fs/bpf").join(unique_name()));
    std::fs::create_dir(&empty.0).unwrap();
    let err = format!("{:#}", Tracer::load(&empty.0).unwrap_err());
    assert!(err.contains("no lb datapath pinned at"), "{err}");
    assert_eq!(std::fs::read_dir(&empty.0).unwrap().count(), 0);
}

/// Removes an extra pin on drop (the pin-dir guard only knows our maps).
struct ExtraPin(std::path::PathBuf);

impl Drop for ExtraPin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn tracer_refuses_maps_of_another_version() {
    let t = TestDatapath::load();
    let names_before: Vec<_> = std::fs::read_dir(&t.pin_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    // Another lb version's frontend map next to ours.
    let v2 = ExtraPin(t.pin_dir.join("lb_fe4_v2"));
    MapData::from_pin(t.pin_dir.join("lb_fe4_v1"))
        .unwrap()
        .pin(&v2.0)
        .unwrap();
    let err = format!("{:#}", Tracer::load(&t.pin_dir).unwrap_err());
    assert!(
        err.contains(&format!(
            "maps in {} were written by another lb version (found lb_fe4_v2; this lb understands _v1)",
            t.pin_dir.display()
        )),
        "{err}"
    );
    drop(v2);
    // Files of other kinds, or of our version, are no obstacle.
    let other = ExtraPin(t.pin_dir.join("lb_notes"));
    MapData::from_pin(t.pin_dir.join("lb_fe4_v1"))
        .unwrap()
        .pin(&other.0)
        .unwrap();
    Tracer::load(&t.pin_dir).unwrap();
    drop(other);
    let mut names_after: Vec<_> = std::fs::read_dir(&t.pin_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut names_before = names_before;
    names_before.sort();
    names_after.sort();
    assert_eq!(names_after, names_before, "the tracer pinned nothing");
}

#[test]
fn tracer_is_never_attached() {
    let t = TestDatapath::load();
    let tracer = tracer(&t);
    let dp = tracer.datapath();
    assert_eq!(dp.pin_dir(), Some(t.pin_dir.as_path()));
    // Not even tried on an interface: refused up front.
    let mut dp = lb::datapath::Datapath::load_existing(&t.pin_dir, true).unwrap();
    let err = format!(
        "{:#}",
        dp.attach_xdp("lb-no-such-dev", lb::datapath::XdpAttachMode::Generic)
            .unwrap_err()
    );
    assert!(err.contains("never attached"), "{err}");
    assert!(!t.pin_dir.join("links").exists());
}

/// The ids of the maps that a loaded program's (verified, translated)
/// instructions still reference: map loads the verifier proved dead are
/// gone. `None` when the kernel does not dump instructions to us.
fn referenced_maps(prog: &Xdp) -> Option<Vec<u32>> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    #[repr(C)]
    struct GetInfo {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let fd = prog.fd().unwrap().as_fd().as_raw_fd();
    // struct bpf_prog_info: xlated_prog_len at byte 20, xlated_prog_insns at 32.
    let get = |info: &mut [u64; 5]| {
        let attr = GetInfo {
            bpf_fd: fd as u32,
            info_len: size_of_val(info) as u32,
            info: info.as_mut_ptr() as u64,
        };
        // SAFETY: a valid attr; the kernel writes at most info_len bytes
        // and at most xlated_prog_len bytes of instructions.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_OBJ_GET_INFO_BY_FD,
                &attr,
                size_of::<GetInfo>(),
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    };
    let mut info = [0u64; 5];
    get(&mut info);
    let len = (info[2] >> 32) as usize;
    if len == 0 {
        return None;
    }
    let mut insns = vec![0u64; len / 8];
    let mut info = [0u64; 5];
    info[2] = (len as u64) << 32;
    info[4] = insns.as_mut_ptr() as u64;
    get(&mut info);
    if info[4] == 0 {
        return None;
    }
    // ld_imm64 (opcode 0x18) with src_reg BPF_PSEUDO_MAP_FD (1) or
    // BPF_PSEUDO_MAP_VALUE (2): the dump puts the map id in imm.
    let mut ids = Vec::new();
    let mut i = 0;
    while i < insns.len() {
        let insn = insns[i].to_ne_bytes();
        if insn[0] == 0x18 {
            let src = insn[1] >> 4;
            if src == 1 || src == 2 {
                ids.push(u32::from_ne_bytes(insn[4..8].try_into().unwrap()));
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    ids.sort();
    ids.dedup();
    Some(ids)
}

fn map_name(id: u32) -> String {
    MapInfo::from_id(id)
        .unwrap()
        .name_as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_normal_datapath_never_writes_trace_and_prunes_it() {
    let mut t = TestDatapath::load();
    install_service(
        &mut t.maps,
        frontend_key(NODE, NODE_PORT, PROTO_TCP, SCOPE_EXTERNAL),
        7,
        0,
        NODE_PORT_KIND,
        &four_backends(10, PROTO_TCP),
    );
    install_service(
        &mut t.maps,
        frontend_key(NODE, 30001, PROTO_TCP, SCOPE_EXTERNAL),
        8,
        0,
        NODE_PORT_KIND,
        &[],
    );
    for frame in [
        tcp_frame(CLIENT, 40000, NODE, NODE_PORT, true, b""),
        tcp_frame(CLIENT, 40000, NODE, NODE_PORT, false, b"x"),
        tcp_frame(CLIENT, 40000, NODE, 30001, true, b""),
        tcp_frame(CLIENT, 40000, NODE, 22, true, b""),
    ] {
        t.run_xdp(&frame);
    }
    assert_eq!(t.maps.connections().unwrap().len(), 2, "the real thing ran");
    assert_eq!(t.dp().trace_record().unwrap(), TraceRecord::default());

    // The trace code is not even there once verified: no instruction of
    // the normal program references lb_trace, while the dry run's do.
    let tracer = tracer(&t);
    let names = |prog: &Xdp| {
        referenced_maps(prog).map(|ids| ids.into_iter().map(map_name).collect::<Vec<_>>())
    };
    match (
        names(t.dp().xdp_program().unwrap()),
        names(tracer.datapath().xdp_program().unwrap()),
    ) {
        (Some(normal), Some(dry)) => {
            assert!(
                !normal.iter().any(|n| n == "lb_trace"),
                "normal mode references {normal:?}"
            );
            assert!(normal.iter().any(|n| n == "lb_ct4_v3"), "{normal:?}");
            // Masquerade is applied now: the normal program reads the
            // node's address.
            assert!(
                normal.iter().any(|n| n == "lb_snat_addr_v1"),
                "normal mode references {normal:?}"
            );
            assert!(dry.iter().any(|n| n == "lb_snat_addr_v1"), "{dry:?}");
            assert!(dry.iter().any(|n| n == "lb_trace"), "{dry:?}");
            assert!(!dry.iter().any(|n| n == "lb_stats_v1"), "{dry:?}");
        }
        _ => eprintln!("the kernel does not dump translated instructions here: pruning unchecked"),
    }
}

#[test]
fn xdp_counts_per_service() {
    let mut t = TestDatapath::load();
    install_service(
        &mut t.maps,
        frontend_key(NODE, NODE_PORT, PROTO_TCP, SCOPE_EXTERNAL),
        7,
        0,
        NODE_PORT_KIND,
        &four_backends(10, PROTO_TCP),
    );
    install_service(
        &mut t.maps,
        frontend_key(NODE, 30001, PROTO_UDP, SCOPE_EXTERNAL),
        8,
        0,
        NODE_PORT_KIND,
        &[],
    );
    install_service(
        &mut t.maps,
        frontend_key(NODE, 30002, PROTO_TCP, SCOPE_EXTERNAL),
        9,
        0,
        NODE_PORT_KIND | FE_FLAG_EMPTY_DROP,
        &[],
    );
    for sport in 40000..40003u16 {
        t.run_xdp(&tcp_frame(CLIENT, sport, NODE, NODE_PORT, true, b""));
        t.run_xdp(&tcp_frame(CLIENT, sport, NODE, NODE_PORT, false, b"a"));
        t.run_xdp(&tcp_frame(CLIENT, sport, NODE, NODE_PORT, false, b"b"));
    }
    t.run_xdp(&udp_frame(CLIENT, 5353, NODE, 30001, b"q", true));
    t.run_xdp(&udp_frame(CLIENT, 5354, NODE, 30001, b"q", true));
    t.run_xdp(&tcp_frame(CLIENT, 40000, NODE, 30002, true, b""));
    t.run_xdp(&tcp_frame(CLIENT, 40000, NODE, 22, true, b""));
    assert_eq!(t.maps.service_counters(7).unwrap(), counters(3, 6, 0, 0));
    assert_eq!(t.maps.service_counters(8).unwrap(), counters(0, 0, 2, 0));
    assert_eq!(t.maps.service_counters(9).unwrap(), counters(0, 0, 0, 1));
    assert_eq!(t.maps.service_counters(0).unwrap(), counters(0, 0, 0, 0));
    assert_eq!(
        t.nonzero_stats(),
        vec![
            (Reason::PassNoService, 1),
            (Reason::DnatNew, 3),
            (Reason::DnatEstablished, 6),
            (Reason::DropNoLocalEndpoint, 1),
            (Reason::RejectNoEndpoints, 2),
        ]
    );
}

// --- Socket hooks: per-service counters, and the trace agrees with them ---

const FRONTEND: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 100);
const LOOPBACK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const TIMEOUT: Duration = Duration::from_secs(5);
const ENV_CGROUP: &str = "LB_TRACE_CHILD_CGROUP";
const ENV_TARGETS: &str = "LB_TRACE_CHILD_TARGETS";

/// The child side: does nothing in a normal run. Re-executed with the
/// environment above, it enters the cgroup and, for each `tcp:ADDR` or
/// `udp:ADDR` target, connects (TCP) or sends a datagram (UDP), printing
/// `ok` or the errno.
#[test]
fn trace_sock_child() {
    let Ok(cgroup) = std::env::var(ENV_CGROUP) else {
        return;
    };
    enter_cgroup(Path::new(&cgroup));
    println!("<<<");
    for target in std::env::var(ENV_TARGETS).unwrap().split(',') {
        let (kind, addr) = target.split_once(':').unwrap();
        let addr: SocketAddr = addr.parse().unwrap();
        let result = match kind {
            "tcp" => TcpStream::connect_timeout(&addr, TIMEOUT).map(drop),
            "udp" => UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.send_to(b"ping", addr))
                .map(drop),
            other => panic!("unknown kind {other}"),
        };
        match result {
            Ok(()) => println!("ok"),
            Err(e) => println!("errno={}", e.raw_os_error().unwrap_or(-1)),
        }
    }
    println!(">>>");
}

fn run_child(cgroup: &Path, targets: &[String]) -> Vec<String> {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "trace_sock_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ENV_CGROUP, cgroup)
        .env(ENV_TARGETS, targets.join(","))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .split("<<<\n")
        .nth(1)
        .and_then(|s| s.split(">>>").next())
        .expect("child output")
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn socket_hooks_count_per_service_and_the_trace_agrees() {
    // Locals drop in reverse: the cgroup goes before the datapath.
    let mut t = TestDatapath::load();
    let cgroup = TestCgroup::create();
    assert_eq!(
        t.dp_mut().attach_cgroup(&cgroup.path).unwrap(),
        Attached::New
    );
    // Four TCP backends on loopback ports, and one UDP.
    let listeners: Vec<TcpListener> = (0..4)
        .map(|_| TcpListener::bind((LOOPBACK, 0)).unwrap())
        .collect();
    let tcp_backends: Vec<(u32, lb_common::Backend4)> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let port = l.local_addr().unwrap().port();
            (60 + i as u32, backend(LOOPBACK, port, PROTO_TCP))
        })
        .collect();
    let udp_sink = UdpSocket::bind((LOOPBACK, 0)).unwrap();
    let udp_port = udp_sink.local_addr().unwrap().port();
    install_service(
        &mut t.maps,
        frontend_key(FRONTEND, 80, PROTO_TCP, SCOPE_INTERNAL),
        11,
        0,
        CLUSTER_IP_KIND,
        &tcp_backends,
    );
    install_service(
        &mut t.maps,
        frontend_key(FRONTEND, 53, PROTO_UDP, SCOPE_INTERNAL),
        12,
        1,
        CLUSTER_IP_KIND,
        &[(70, backend(LOOPBACK, udp_port, PROTO_UDP))],
    );
    install_service(
        &mut t.maps,
        frontend_key(FRONTEND, 81, PROTO_TCP, SCOPE_INTERNAL),
        13,
        0,
        CLUSTER_IP_KIND,
        &[],
    );
    install_service(
        &mut t.maps,
        frontend_key(FRONTEND, 82, PROTO_TCP, SCOPE_INTERNAL),
        14,
        0,
        CLUSTER_IP_KIND | FE_FLAG_EMPTY_DROP,
        &[],
    );
    let mut targets: Vec<String> = (0..8).map(|_| format!("tcp:{FRONTEND}:80")).collect();
    targets.extend([
        format!("udp:{FRONTEND}:53"),
        format!("udp:{FRONTEND}:53"),
        format!("tcp:{FRONTEND}:81"),
        format!("tcp:{FRONTEND}:82"),
    ]);
    let lines = run_child(&cgroup.path, &targets);
    let refused = format!("errno={}", libc::ECONNREFUSED);
    let expected: Vec<String> = ["ok"; 10]
        .iter()
        .map(|s| s.to_string())
        .chain([refused.clone(), refused])
        .collect();
    assert_eq!(lines, expected);

    assert_eq!(t.maps.service_counters(11).unwrap(), counters(8, 0, 0, 0));
    assert_eq!(t.maps.service_counters(12).unwrap(), counters(2, 0, 0, 0));
    assert_eq!(t.maps.service_counters(13).unwrap(), counters(0, 0, 1, 0));
    assert_eq!(t.maps.service_counters(14).unwrap(), counters(0, 0, 0, 1));
    assert_eq!(t.stat(Reason::SockConnect), 8);
    assert_eq!(t.stat(Reason::SockSendmsg), 2);

    // Each real socket's cookie, traced, gives the backend the hook chose.
    let before = snapshot(&t.maps, &[11, 12, 13, 14]);
    let tracer = tracer(&t);
    let translations = t.maps.socket_translations().unwrap();
    let tcp_socks: Vec<_> = translations
        .iter()
        .filter(|(_, v)| v.service_id == 11)
        .collect();
    assert_eq!(tcp_socks.len(), 8);
    for (k, _) in tcp_socks {
        let outcome = tracer
            .trace_socket(
                &build_frame(v4(LOOPBACK, 45000), v4(FRONTEND, 80), Protocol::Tcp),
                k.cookie,
            )
            .unwrap();
        assert_eq!(outcome.record.reason, Reason::SockConnect as u32);
        assert_eq!(
            (outcome.record.nat_addr_be, outcome.record.nat_port_be),
            (k.backend_addr_be, k.backend_port_be),
            "cookie {:#x}",
            k.cookie
        );
    }
    assert_eq!(snapshot(&t.maps, &[11, 12, 13, 14]), before);
}
