//! The selection window's per-CPU counts (`lb_readers_v1`) in the real
//! programs, and the writer's wait on them. Every outcome of XDP's new
//! flows (under BPF_PROG_TEST_RUN) and of the socket hooks (a child
//! process in a test cgroup) leaves the counts equal on every CPU, and
//! `entered` rises exactly for the outcomes that read a slot, an affinity
//! entry or a backend; the writer's wait before a removal ends at once
//! when every CPU is empty, holds while a CPU shows a reader inside (the
//! counts written by the test), and past its bound waits for an RCU grace
//! period instead. kube-proxy's guarantee it keeps: no connection entry is
//! made for an endpoint once its removal's cleanup ran (conntrack entries
//! of a UDP endpoint gone are deleted after the rules that could create
//! them, pkg/proxy/iptables/proxier.go `syncProxyRules`).

mod common;

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, PerCpuArray, PerCpuValues};
use common::*;
use lb::{
    datapath::{
        Attached, DatapathMaps as _, KernelMaps,
        codec::{FrontendEntry, frontend_value},
    },
    model::{FrontendKind, SourceRange, WhenEmpty},
    plan::Applied,
};
use lb_common::{
    PROTO_TCP, PROTO_UDP, SCOPE_EXTERNAL, SCOPE_INTERNAL,
    packet::tcp,
    readers::{READERS, READERS_ENTERED, READERS_LEFT},
    reason::Reason,
};

const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 12);
const LB_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 62);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 23);
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 10);
const LOOPBACK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// Readers that entered on every CPU together, once every CPU's counts are
/// checked equal: a path out of the window that did not leave it fails.
fn entered(maps: &KernelMaps) -> u64 {
    let per_cpu = maps.table_readers_per_cpu().unwrap();
    for (cpu, (entered, left)) in per_cpu.iter().enumerate() {
        assert_eq!(entered, left, "CPU {cpu}: a reader entered and never left");
    }
    per_cpu.iter().map(|(entered, _)| entered).sum()
}

/// Runs `f`; how many readers entered the window meanwhile (all left).
fn entered_by(maps: &KernelMaps, f: impl FnOnce()) -> u64 {
    let before = entered(maps);
    f();
    entered(maps) - before
}

/// Frontend flags of kind `kind`, with affinity and source ranges as asked.
fn flags(kind: FrontendKind, affinity_timeout_s: u32, source_ranges: bool) -> u32 {
    frontend_value(&FrontendEntry {
        service_id: 1,
        table_id: 0,
        backend_count: 1,
        kind: Some(kind),
        when_empty: WhenEmpty::Reject,
        affinity_timeout_s,
        masquerade: false,
        source_ranges,
        algorithm: Default::default(),
    })
    .flags
}

/// XDP's every outcome for a packet to a frontend: a new flow, its next
/// packet (established), a reply clash (the connection entry's insert
/// refused: the same client port reaching the same pod through another
/// frontend), two new flows of an affinity client (the second one a hit),
/// a frontend without endpoints (rejected), a source outside the ranges
/// (dropped), a table naming a backend that is gone, and no frontend.
#[test]
fn every_xdp_outcome_leaves_the_window_it_entered() {
    let mut t = TestDatapath::load_with(16, 4096);
    let node_port = flags(FrontendKind::NodePort, 0, false);
    let pod = |port| backend(POD, port, PROTO_TCP);
    let key = |port| frontend_key(NODE, port, PROTO_TCP, SCOPE_EXTERNAL);
    install_service(&mut t.maps, key(30801), 1, 0, node_port, &[(1, pod(8080))]);
    install_service(&mut t.maps, key(30802), 2, 1, node_port, &[(2, pod(8080))]);
    let sticky = flags(FrontendKind::NodePort, 10_800, false);
    let many: Vec<_> = (3..11).map(|id| (id, pod(9000 + id as u16))).collect();
    install_service(&mut t.maps, key(30803), 3, 2, sticky, &many);
    install_service(&mut t.maps, key(30804), 4, 3, node_port, &[]);
    let guarded = flags(FrontendKind::LoadBalancer, 0, true);
    let inside = SourceRange::new(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap();
    t.maps.set_source_range(5, &inside).unwrap();
    let lb_ip = frontend_key(LB_IP, 80, PROTO_TCP, SCOPE_EXTERNAL);
    install_service(&mut t.maps, lb_ip, 5, 4, guarded, &[(11, pod(8080))]);
    install_service(&mut t.maps, key(30806), 6, 5, node_port, &[(12, pod(8082))]);
    t.maps.remove_backend(12).unwrap();

    let syn = |sport, dst, port| t.run_xdp(&tcp_frame(CLIENT, sport, dst, port, true, b""));
    let counted = |reason| t.stat(reason);

    assert_eq!(
        entered_by(&t.maps, || assert_eq!(syn(40001, NODE, 30801).0, XDP_PASS)),
        1
    );
    assert_eq!(counted(Reason::DnatNew), 1);
    let ack = tcp_flags_frame(CLIENT, 40001, NODE, 30801, tcp::ACK, b"");
    assert_eq!(
        entered_by(&t.maps, || assert_eq!(t.run_xdp(&ack).0, XDP_PASS)),
        0
    );
    assert_eq!(counted(Reason::DnatEstablished), 1, "established");

    assert_eq!(
        entered_by(&t.maps, || assert_eq!(syn(40001, NODE, 30802).0, XDP_DROP)),
        1
    );
    assert_eq!(counted(Reason::DropCtReplyClash), 1, "the insert refused");

    let mut chosen = Vec::new();
    let twice = entered_by(&t.maps, || {
        for sport in [40010, 40011] {
            let (action, out) = syn(sport, NODE, 30803);
            assert_eq!(action, XDP_PASS);
            chosen.push(check_frame(&out).dport);
        }
    });
    assert_eq!(twice, 2);
    assert_eq!(chosen[0], chosen[1], "the second flow kept the first's pod");
    assert_eq!(t.maps.affinity_entries().unwrap().len(), 1);

    assert_eq!(entered_by(&t.maps, || drop(syn(40020, NODE, 30804))), 0);
    assert_eq!(counted(Reason::RejectNoEndpoints), 1);
    assert_eq!(
        entered_by(&t.maps, || assert_eq!(syn(40030, LB_IP, 80).0, XDP_DROP)),
        0
    );
    assert_eq!(counted(Reason::DropSourceRange), 1);
    assert_eq!(
        entered_by(&t.maps, || assert_eq!(syn(40040, NODE, 30806).0, XDP_DROP)),
        1
    );
    assert_eq!(counted(Reason::DropBackendMissing), 1);
    assert_eq!(
        entered_by(&t.maps, || assert_eq!(syn(40050, NODE, 30899).0, XDP_PASS)),
        0
    );
    assert_eq!(counted(Reason::PassNoService), 1);
}

const ENV_MODE: &str = "LB_READERS_CHILD_MODE";
const ENV_CGROUP: &str = "LB_READERS_CHILD_CGROUP";
const ENV_TARGET: &str = "LB_READERS_CHILD_TARGET";

/// The child side: in a normal run it returns at once. Re-executed with
/// the environment above, it enters the cgroup and `connect()`s a UDP
/// socket bound to 127.0.0.1 to the target (`connect`, `connect-twice`:
/// two sockets) or sends it a datagram unconnected (`send`), and prints
/// `ok` or the errno.
#[test]
fn readers_child() {
    let Ok(mode) = std::env::var(ENV_MODE) else {
        return;
    };
    enter_cgroup(Path::new(&std::env::var(ENV_CGROUP).unwrap()));
    let target: SocketAddr = std::env::var(ENV_TARGET).unwrap().parse().unwrap();
    let once = || {
        let socket = UdpSocket::bind((LOOPBACK, 0)).unwrap();
        match mode.as_str() {
            "send" => socket.send_to(b"ping", target).map(drop),
            _ => socket.connect(target),
        }
    };
    let times = if mode == "connect-twice" { 2 } else { 1 };
    let outcomes: Vec<String> = (0..times)
        .map(|_| match once() {
            Ok(()) => "ok".to_string(),
            Err(err) => format!("errno {}", err.raw_os_error().unwrap_or(-1)),
        })
        .collect();
    println!("<<<{}>>>", outcomes.join(","));
}

/// What the child says for `mode` toward `target`, from `cgroup`.
fn child(cgroup: &Path, mode: &str, target: SocketAddr) -> String {
    child_says(
        "readers_child",
        &[
            (ENV_MODE, mode.to_string()),
            (ENV_CGROUP, cgroup.display().to_string()),
            (ENV_TARGET, target.to_string()),
        ],
    )
}

/// The socket hooks' every outcome (connect4 and sendmsg4): a translation
/// at connect() and at an unconnected send, two connects of an affinity
/// client (the second one a hit), a frontend without endpoints (refused),
/// a bound source outside the ranges (forbidden), a table naming a
/// backend that is gone (failed), and no frontend (passed).
#[test]
fn every_socket_outcome_leaves_the_window_it_entered() {
    let mut t = TestDatapath::load_with(16, 4096);
    let cgroup = TestCgroup::create();
    assert_eq!(
        t.dp_mut().attach_cgroup(&cgroup.path).unwrap(),
        Attached::New
    );
    let frontend = |last| Ipv4Addr::new(127, 0, 0, last);
    let key = |last| frontend_key(frontend(last), 53, PROTO_UDP, SCOPE_INTERNAL);
    let to = |last| SocketAddr::from((frontend(last), 53));
    let loopback = |port| backend(LOOPBACK, port, PROTO_UDP);
    let cluster_ip = flags(FrontendKind::ClusterIp, 0, false);
    install_service(
        &mut t.maps,
        key(100),
        1,
        0,
        cluster_ip,
        &[(1, loopback(5301))],
    );
    let sticky = flags(FrontendKind::ClusterIp, 10_800, false);
    let many: Vec<_> = (2..6).map(|id| (id, loopback(5300 + id as u16))).collect();
    install_service(&mut t.maps, key(101), 2, 1, sticky, &many);
    install_service(&mut t.maps, key(102), 3, 2, cluster_ip, &[]);
    let guarded = flags(FrontendKind::LoadBalancer, 0, true);
    let elsewhere = SourceRange::new(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap();
    t.maps.set_source_range(4, &elsewhere).unwrap();
    install_service(&mut t.maps, key(103), 4, 3, guarded, &[(6, loopback(5306))]);
    install_service(
        &mut t.maps,
        key(104),
        5,
        4,
        cluster_ip,
        &[(7, loopback(5307))],
    );
    t.maps.remove_backend(7).unwrap();
    let path = cgroup.path.clone();
    let says = |mode, target| child(&path, mode, target);
    let eperm = format!("errno {}", libc::EPERM);

    assert_eq!(
        entered_by(&t.maps, || assert_eq!(says("connect", to(100)), "ok")),
        1
    );
    assert_eq!(t.stat(Reason::SockConnect), 1);
    assert_eq!(
        entered_by(&t.maps, || assert_eq!(says("send", to(100)), "ok")),
        1
    );
    assert_eq!(t.stat(Reason::SockSendmsg), 1);
    let twice = entered_by(&t.maps, || {
        assert_eq!(says("connect-twice", to(101)), "ok,ok");
    });
    assert_eq!(twice, 2);
    assert_eq!(
        t.maps.affinity_entries().unwrap().len(),
        1,
        "the second a hit"
    );
    let refused = format!("errno {}", libc::ECONNREFUSED);
    assert_eq!(
        entered_by(&t.maps, || assert_eq!(says("connect", to(102)), refused)),
        0
    );
    assert_eq!(t.stat(Reason::RejectNoEndpoints), 1);
    assert_eq!(
        entered_by(&t.maps, || assert_eq!(says("connect", to(103)), eperm)),
        0
    );
    assert_eq!(t.stat(Reason::DropSourceRange), 1);
    assert_eq!(
        entered_by(&t.maps, || assert_eq!(says("connect", to(104)), eperm)),
        1
    );
    assert_eq!(t.stat(Reason::DropBackendMissing), 1);
    let elsewhere = SocketAddr::from((LOOPBACK, 5399));
    assert_eq!(
        entered_by(&t.maps, || assert_eq!(says("connect", elsewhere), "ok")),
        0
    );
    drop(cgroup);
}

const NODE_PORT: u16 = 30810;

fn pod(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 3, i + 1)
}

/// A NodePort Service over the pods `pods`, planned and applied by the
/// real planner and writer (2 and 3 pods keep 1,021 slots: in place).
fn serve(maps: &mut KernelMaps, applied: &mut Applied, pods: &[u8]) {
    let endpoints: Vec<Ipv4Addr> = pods.iter().map(|i| pod(*i)).collect();
    let service = ("waited", Ipv4Addr::new(10, 96, 0, 181), NODE_PORT);
    serve_node_port(maps, applied, service, &endpoints, NODE);
}

/// The Service on pods 0 and 1, then rewritten in place onto 0, 1 and 2:
/// the next change back to 0 and 1 rewrites in place and removes pod 2's
/// backend, after the wait for readers.
fn rewritten_in_place() -> (TestDatapath, Applied) {
    let mut t = TestDatapath::load();
    let mut applied = Applied::default();
    serve(&mut t.maps, &mut applied, &[0, 1]);
    serve(&mut t.maps, &mut applied, &[0, 1, 2]);
    (t, applied)
}

/// The counts map itself, written by the test to stand for a reader.
fn counts(t: &TestDatapath) -> PerCpuArray<MapData, u64> {
    let data = MapData::from_pin(t.pin_dir.join(READERS)).unwrap();
    PerCpuArray::try_from(Map::PerCpuArray(data)).unwrap()
}

/// Adds one to `slot` on the last CPU (a reader entering or leaving there).
fn bump(counts: &mut PerCpuArray<MapData, u64>, slot: u32) {
    let mut values = counts.get(&slot, 0).unwrap().to_vec();
    *values.last_mut().unwrap() += 1;
    counts
        .set(slot, PerCpuValues::try_from(values).unwrap(), 0)
        .unwrap();
}

/// Whether pod `i`'s backend is still in the maps.
fn has_backend(maps: &KernelMaps, i: u8) -> bool {
    backend_addresses(maps).values().any(|addr| *addr == pod(i))
}

/// Every CPU empty: the wait before pod 2's removal is the counts', with
/// no outer update (no grace period).
#[test]
fn the_wait_ends_at_once_when_every_cpu_is_empty() {
    let (mut t, mut applied) = rewritten_in_place();
    let waits = t.maps.table_reader_waits();
    let (counted, outer) = (
        waits.counted.load(Ordering::Relaxed),
        t.maps.maglev_outer_updates(),
    );
    serve(&mut t.maps, &mut applied, &[0, 1]);
    assert!(!has_backend(&t.maps, 2));
    assert_eq!(waits.counted.load(Ordering::Relaxed), counted + 1);
    assert_eq!(waits.grace_periods.load(Ordering::Relaxed), 0);
    assert_eq!(t.maps.maglev_outer_updates(), outer, "no grace period");
}

/// A CPU showing a reader inside holds the wait (the removal does not
/// happen) until the reader leaves; the counts then end it, no grace
/// period taken.
#[test]
fn a_reader_inside_holds_the_wait_until_it_leaves() {
    let (mut t, mut applied) = rewritten_in_place();
    let waits = t.maps.table_reader_waits();
    let outer = t.maps.maglev_outer_updates();
    let mut counts = counts(&t);
    bump(&mut counts, READERS_ENTERED);
    let inside = Duration::from_millis(8);
    let started = Instant::now();
    let leaves = std::thread::spawn(move || {
        std::thread::sleep(inside);
        bump(&mut counts, READERS_LEFT);
    });
    serve(&mut t.maps, &mut applied, &[0, 1]);
    let took = started.elapsed();
    leaves.join().unwrap();
    assert!(took >= inside, "the wait returned after {took:?}");
    assert!(!has_backend(&t.maps, 2));
    assert_eq!(waits.counted.load(Ordering::Relaxed), 1);
    assert_eq!(waits.grace_periods.load(Ordering::Relaxed), 0);
    assert_eq!(t.maps.maglev_outer_updates(), outer);
    // Every CPU balanced again (`entered` checks).
    entered(&t.maps);
}

/// A reader that never leaves: past the bound (20 ms) the wait takes an
/// RCU grace period (one outer update) instead, then the removal goes on;
/// once the CPU is empty again the counts end the next wait.
#[test]
fn a_reader_stuck_past_the_bound_gives_way_to_a_grace_period() {
    let (mut t, mut applied) = rewritten_in_place();
    let waits = t.maps.table_reader_waits();
    let outer = t.maps.maglev_outer_updates();
    let mut counts = counts(&t);
    bump(&mut counts, READERS_ENTERED);
    let started = Instant::now();
    serve(&mut t.maps, &mut applied, &[0, 1]);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(20), "gave up after {took:?}");
    assert!(!has_backend(&t.maps, 2));
    assert_eq!(waits.grace_periods.load(Ordering::Relaxed), 1);
    assert_eq!(waits.counted.load(Ordering::Relaxed), 0);
    assert_eq!(t.maps.maglev_outer_updates(), outer + 1, "one grace period");

    bump(&mut counts, READERS_LEFT);
    serve(&mut t.maps, &mut applied, &[0, 1, 2]);
    serve(&mut t.maps, &mut applied, &[0, 1]);
    assert_eq!(waits.counted.load(Ordering::Relaxed), 1);
    assert_eq!(waits.grace_periods.load(Ordering::Relaxed), 1);
}

/// The counts are pinned like every map: a restart adopts them as they
/// are (the same map, its counts kept), and a pin set an older build left
/// without them gets them at the restart, the programs counting in it.
#[test]
fn a_restart_adopts_the_pinned_counts_and_an_older_pin_set_gains_them() {
    let t = TestDatapath::load();
    let pin = t.pin_dir.join(READERS);
    let first_map = MapData::from_pin(&pin).unwrap().info().unwrap().id();
    let serve_one = |maps: &mut KernelMaps| {
        let key = frontend_key(NODE, 30820, PROTO_TCP, SCOPE_EXTERNAL);
        let node_port = flags(FrontendKind::NodePort, 0, false);
        install_service(
            maps,
            key,
            1,
            0,
            node_port,
            &[(1, backend(POD, 8080, PROTO_TCP))],
        );
    };
    let restart = || {
        lb::datapath::loader::Datapath::load(&lb::datapath::loader::LoadOptions {
            pin_dir: Some(t.pin_dir.clone()),
            max_tables: 8,
            ct_entries: 4096,
            ..Default::default()
        })
        .unwrap()
    };
    let new_flow = |dp: &lb::datapath::loader::Datapath, sport| {
        let frame = tcp_frame(CLIENT, sport, NODE, 30820, true, b"");
        assert_eq!(dp.run_xdp(&frame).unwrap().0, XDP_PASS);
    };
    let mut maps = t.dp().maps().unwrap();
    serve_one(&mut maps);
    new_flow(t.dp(), 40100);
    assert_eq!(entered(&maps), 1);

    let restarted = restart();
    let maps = restarted.maps().unwrap();
    assert_eq!(
        MapData::from_pin(&pin).unwrap().info().unwrap().id(),
        first_map
    );
    assert_eq!(entered(&maps), 1, "the counts were adopted");

    drop((restarted, maps));
    std::fs::remove_file(&pin).unwrap();
    let restarted = restart();
    let mut maps = restarted.maps().unwrap();
    assert_ne!(
        MapData::from_pin(&pin).unwrap().info().unwrap().id(),
        first_map
    );
    assert_eq!(entered(&maps), 0, "a fresh map");
    serve_one(&mut maps);
    new_flow(&restarted, 40101);
    assert_eq!(entered(&maps), 1, "the restarted programs count in it");
}
