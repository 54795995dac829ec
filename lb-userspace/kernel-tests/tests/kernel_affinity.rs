//! Session affinity (`sessionAffinity: ClientIP`) in the real programs:
//! XDP under BPF_PROG_TEST_RUN, the socket hooks on a test cgroup. Each
//! test names the kube-proxy iptables rule it mirrors
//! (pkg/proxy/iptables/proxier.go: per endpoint `-m recent --name
//! KUBE-SEP-... --set` on the way in, and in the Service chain `-m recent
//! --rcheck --seconds <timeoutSeconds> --reap` before the random choice).

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::*;
use lb::{
    datapath::{
        Attached, DatapathMaps as _,
        trace::{Tracer, build_frame},
    },
    model::Protocol,
    ops::{
        affinity,
        explain::{self, Entry},
        inspect::Inspector,
    },
};
use lb_common::{
    AFFINITY_CLIENT_ADDR, AFFINITY_CLIENT_NETNS, AFFINITY_SET_CLUSTER, AFFINITY_SET_LOCAL,
    FE_AFFINITY_SHIFT, FE_FLAG_EMPTY_DROP, FE_KIND_LOAD_BALANCER, FE_KIND_NODE_PORT, FE_KIND_SHIFT,
    PROTO_TCP, SCOPE_EXTERNAL, SCOPE_INTERNAL, TRACE_AFFINITY_HIT, TRACE_AFFINITY_SET,
    TRACE_BACKEND, TRACE_FRONTEND,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const NODE_PORT: u16 = 30080;
const SERVICE: u32 = 9;
const BACKENDS: u32 = 8;

fn pod(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, 10 + i as u8)
}

fn flags(timeout_s: u32) -> u32 {
    FE_KIND_NODE_PORT << FE_KIND_SHIFT | timeout_s << FE_AFFINITY_SHIFT
}

/// A NodePort over eight backends (ids 1..=8), with the given affinity
/// timeout (0: none), in table `table`.
fn service(t: &mut TestDatapath, timeout_s: u32, table: u32, ids: &[u32]) {
    let backends: Vec<_> = ids
        .iter()
        .map(|&id| (id, backend(pod(id), 8080, PROTO_TCP)))
        .collect();
    install_service(
        &mut t.maps,
        frontend_key(NODE, NODE_PORT, PROTO_TCP, SCOPE_EXTERNAL),
        SERVICE,
        table,
        flags(timeout_s),
        &backends,
    );
}

fn all() -> Vec<u32> {
    (1..=BACKENDS).collect()
}

/// The backend a new connection (a SYN from `sport`) is sent to.
fn connect(t: &TestDatapath, client: Ipv4Addr, sport: u16) -> Ipv4Addr {
    let (action, out) = t.run_xdp(&tcp_frame(client, sport, NODE, NODE_PORT, true, b""));
    assert_eq!(action, XDP_PASS);
    check_frame(&out).dst
}

fn entry(t: &TestDatapath) -> (lb_common::Affinity4Key, lb_common::Affinity4Value) {
    let entries = t.maps.affinity_entries().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0]
}

/// Upstream: `--rcheck --seconds` before the random pick: every new
/// connection of a remembered client goes to its endpoint. Without
/// affinity the same connections spread (the check can fail).
#[test]
fn client_ip_affinity_keeps_a_client_s_connections_on_one_backend() {
    let mut t = TestDatapath::load();
    service(&mut t, 0, 0, &all());
    let spread: std::collections::BTreeSet<_> =
        (0..16).map(|i| connect(&t, CLIENT, 41000 + i)).collect();
    assert!(spread.len() > 1, "without affinity: {spread:?}");
    assert!(t.maps.affinity_entries().unwrap().is_empty());

    service(&mut t, 10_800, 1, &all());
    let first = connect(&t, CLIENT, 42000);
    for i in 1..16 {
        assert_eq!(connect(&t, CLIENT, 42000 + i), first, "connection {i}");
    }
    let (key, value) = entry(&t);
    assert_eq!(
        (key.service_id, key.set, key.client_kind, key.client),
        (
            SERVICE,
            AFFINITY_SET_CLUSTER,
            AFFINITY_CLIENT_ADDR,
            u64::from(be32(CLIENT))
        )
    );
    assert_eq!(pod(value.backend_id), first);
}

/// Upstream: `--seconds <timeoutSeconds>`: an entry last set the timeout
/// ago or longer no longer matches, and the pick is free again (the entry
/// is aged by moving its time back, not by sleeping). One second short
/// of the timeout it still holds, and a new connection refreshes it
/// (`--set`).
#[test]
fn an_affinity_entry_expires_after_its_timeout() {
    let mut t = TestDatapath::load();
    service(&mut t, 5, 0, &all());
    let first = connect(&t, CLIENT, 43000);
    let age = |t: &mut TestDatapath, by: u32| {
        let (key, mut value) = entry(t);
        value.last_used_s -= by;
        t.maps.set_affinity_entry(&key, &value).unwrap();
        value.last_used_s
    };
    for i in 1..10 {
        let aged = age(&mut t, 4);
        assert_eq!(connect(&t, CLIENT, 43000 + i), first, "within the timeout");
        assert!(entry(&t).1.last_used_s >= aged + 4, "refreshed by --set");
    }
    let moved = (10..40).find(|i| {
        age(&mut t, 5);
        connect(&t, CLIENT, 43000 + i) != first
    });
    assert!(moved.is_some(), "an expired entry never let the pick move");
    assert_ne!(
        pod(entry(&t).1.backend_id),
        first,
        "the new choice is remembered"
    );
}

/// Upstream: an endpoint that leaves takes its KUBE-SEP chain and its
/// `--rcheck` rule with it. The writer purges the entries of (service,
/// backend) pairs the plan names; the client's next connection chooses
/// among the remaining endpoints.
#[test]
fn an_endpoint_that_goes_away_releases_its_clients() {
    let mut t = TestDatapath::load();
    service(&mut t, 10_800, 0, &all());
    let first = connect(&t, CLIENT, 44000);
    let gone = entry(&t).1.backend_id;
    let rest: Vec<u32> = all().into_iter().filter(|id| *id != gone).collect();
    service(&mut t, 10_800, 1, &rest);
    // Until the purge the backend still exists and the entry holds.
    assert_eq!(connect(&t, CLIENT, 44001), first);
    assert_eq!(t.maps.purge_affinity(&[(SERVICE, gone)]).unwrap(), 1);
    assert!(t.maps.affinity_entries().unwrap().is_empty());
    let next = connect(&t, CLIENT, 44002);
    assert_ne!(next, first);
    for i in 3..10 {
        assert_eq!(connect(&t, CLIENT, 44000 + i), next, "stuck to the new one");
    }
}

/// Upstream: the `--rcheck` rules sit in each Service chain, KUBE-SVC
/// (all endpoints) and KUBE-SVL (policy Local: this node's), and each
/// checks only its own endpoints: a client remembered for a remote
/// endpoint through one frontend is not sent there by a Local one.
#[test]
fn a_local_policy_frontend_keeps_its_own_affinity() {
    let mut t = TestDatapath::load();
    let lb_ip = Ipv4Addr::new(203, 0, 113, 10);
    let remote: Vec<_> = (3..=8)
        .map(|id| (id, backend(pod(id), 8080, PROTO_TCP)))
        .collect();
    install_service(
        &mut t.maps,
        frontend_key(lb_ip, 80, PROTO_TCP, SCOPE_EXTERNAL),
        SERVICE,
        0,
        FE_KIND_LOAD_BALANCER << FE_KIND_SHIFT | 600 << FE_AFFINITY_SHIFT,
        &remote,
    );
    let local: Vec<_> = (1..=2)
        .map(|id| (id, backend(pod(id), 8080, PROTO_TCP)))
        .collect();
    install_service(
        &mut t.maps,
        frontend_key(NODE, NODE_PORT, PROTO_TCP, SCOPE_EXTERNAL),
        SERVICE,
        1,
        flags(600) | FE_FLAG_EMPTY_DROP,
        &local,
    );
    let (_, out) = t.run_xdp(&tcp_frame(CLIENT, 46000, lb_ip, 80, true, b""));
    let via_cluster = check_frame(&out).dst;
    assert!(remote.iter().any(|(id, _)| pod(*id) == via_cluster));
    let via_local = connect(&t, CLIENT, 46001);
    assert!(
        local.iter().any(|(id, _)| pod(*id) == via_local),
        "the Local frontend sent the client to {via_local}"
    );
    let mut sets: Vec<u8> = t
        .maps
        .affinity_entries()
        .unwrap()
        .iter()
        .map(|(k, _)| k.set)
        .collect();
    sets.sort();
    assert_eq!(sets, vec![AFFINITY_SET_CLUSTER, AFFINITY_SET_LOCAL]);
}

/// `lb trace` of a remembered client's new connection: the affinity entry
/// decided (and the trace refreshes nothing); `lb affinity list` names
/// the client, the Service port's backend and the time left.
#[test]
fn trace_and_affinity_list_show_the_remembered_client() {
    let mut t = TestDatapath::load();
    service(&mut t, 600, 0, &all());
    let first = connect(&t, CLIENT, 45000);
    let (_, before) = entry(&t);
    let tracer = Tracer::load(&t.pin_dir).unwrap();
    let outcome = tracer
        .trace_external(&tcp_frame(CLIENT, 45001, NODE, NODE_PORT, true, b""))
        .unwrap();
    let r = outcome.record;
    assert_eq!(
        r.steps & (TRACE_FRONTEND | TRACE_AFFINITY_HIT | TRACE_AFFINITY_SET | TRACE_BACKEND),
        TRACE_FRONTEND | TRACE_AFFINITY_HIT | TRACE_AFFINITY_SET | TRACE_BACKEND
    );
    assert_eq!(r.backend_id, before.backend_id);
    assert_eq!(entry(&t).1, before, "a trace writes no affinity entry");
    let inspector = Inspector::open(tracer.maps().unwrap()).unwrap();
    let v4 = |addr: Ipv4Addr, port| std::net::SocketAddrV4::new(addr, port);
    let report = explain::report(
        Entry::External,
        v4(CLIENT, 45001),
        v4(NODE, NODE_PORT),
        Protocol::Tcp,
        &r,
        &inspector,
    );
    assert_eq!(report.decided_by, Some("session-affinity"));
    assert!(
        report
            .steps
            .iter()
            .any(|s| s.contains("sessionAffinity ClientIP")),
        "{:?}",
        report.steps
    );
    let listed = affinity::list(&inspector, affinity::monotonic_now_s()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].client, CLIENT.to_string());
    assert_eq!(listed[0].backend, format!("{first}:8080"));
    assert_eq!(listed[0].endpoints, "cluster");
    assert!(
        (599..=600).contains(&listed[0].expires_in_seconds),
        "{:?}",
        listed[0]
    );
}

const FRONTEND: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 100);
const LOOPBACK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const TIMEOUT: Duration = Duration::from_secs(5);
const ENV_CGROUP: &str = "LB_AFFINITY_CHILD_CGROUP";
const ENV_TARGET: &str = "LB_AFFINITY_CHILD_TARGET";

/// The child side (a no-op in a normal run): in the cgroup, one TCP
/// connection to the target; prints which backend answered.
#[test]
fn affinity_child() {
    let Ok(cgroup) = std::env::var(ENV_CGROUP) else {
        return;
    };
    enter_cgroup(std::path::Path::new(&cgroup));
    let target: SocketAddr = std::env::var(ENV_TARGET).unwrap().parse().unwrap();
    let mut s = TcpStream::connect_timeout(&target, TIMEOUT).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"ping").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    println!("<<<{answer}>>>");
}

fn child_connects(cgroup: &std::path::Path, target: SocketAddr) -> String {
    let env = [
        (ENV_CGROUP, cgroup.display().to_string()),
        (ENV_TARGET, target.to_string()),
    ];
    child_says("affinity_child", &env)
}

/// Backends on loopback that answer with their own name, until dropped.
struct Servers {
    stop: Arc<AtomicBool>,
    ports: Vec<u16>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Servers {
    fn start(count: usize) -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        let (mut ports, mut threads) = (Vec::new(), Vec::new());
        for i in 0..count {
            let listener = TcpListener::bind((LOOPBACK, 0)).unwrap();
            listener.set_nonblocking(true).unwrap();
            ports.push(listener.local_addr().unwrap().port());
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut conn, _)) => {
                            conn.set_nonblocking(false).unwrap();
                            conn.set_read_timeout(Some(TIMEOUT)).unwrap();
                            let mut buf = [0u8; 4];
                            let _ = conn.read_exact(&mut buf);
                            let _ = conn.write_all(format!("backend-{i}").as_bytes());
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }));
        }
        Servers {
            stop,
            ports,
            threads,
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Upstream, for the node's own processes and pods: kube-proxy's rules
/// see their connections as packets from one client address; here the
/// socket hooks remember the connecting namespace (a pod's has the pod's
/// one address). Separate processes, so separate sockets with separate
/// cookies (which alone would spread them), all reach one backend.
#[test]
fn socket_clients_keep_their_backend_across_connections() {
    let mut t = TestDatapath::load();
    let cgroup = TestCgroup::create();
    assert_eq!(
        t.dp_mut().attach_cgroup(&cgroup.path).unwrap(),
        Attached::New
    );
    let servers = Servers::start(4);
    let backends: Vec<_> = servers
        .ports
        .iter()
        .enumerate()
        .map(|(i, port)| (i as u32 + 1, backend(LOOPBACK, *port, PROTO_TCP)))
        .collect();
    install_service(
        &mut t.maps,
        frontend_key(FRONTEND, 80, PROTO_TCP, SCOPE_INTERNAL),
        SERVICE,
        0,
        10_800 << FE_AFFINITY_SHIFT,
        &backends,
    );
    let target = SocketAddr::from((FRONTEND, 80));
    let first = child_connects(&cgroup.path, target);
    assert!(first.starts_with("backend-"), "{first}");
    for i in 1..6 {
        assert_eq!(
            child_connects(&cgroup.path, target),
            first,
            "connection {i}"
        );
    }
    let (key, value) = entry(&t);
    assert_eq!(
        (key.service_id, key.client_kind),
        (SERVICE, AFFINITY_CLIENT_NETNS)
    );
    assert_ne!(key.client, 0, "the namespace's cookie");
    assert_eq!(format!("backend-{}", value.backend_id - 1), first);

    // `lb trace --from pod --netns-cookie N`: the remembered backend, for
    // any socket of that namespace; another namespace chooses afresh.
    let tracer = Tracer::load(&t.pin_dir).unwrap();
    let frame = build_frame(
        std::net::SocketAddrV4::new(LOOPBACK, 40000),
        std::net::SocketAddrV4::new(FRONTEND, 80),
        Protocol::Tcp,
    );
    let traced = tracer
        .trace_socket_in(&frame, 12345, key.client)
        .unwrap()
        .record;
    assert_ne!(traced.steps & TRACE_AFFINITY_HIT, 0);
    assert_eq!(traced.backend_id, value.backend_id);
    let elsewhere = tracer
        .trace_socket_in(&frame, 12345, key.client + 1)
        .unwrap()
        .record;
    assert_eq!(elsewhere.steps & TRACE_AFFINITY_HIT, 0);
    assert_ne!(elsewhere.steps & TRACE_AFFINITY_SET, 0);
    drop(servers);
    drop(cgroup);
}
