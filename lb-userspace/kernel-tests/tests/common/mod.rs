//! Shared helpers of the kernel tests: a datapath loaded under a private pin
//! directory (removed on drop, even when the test panics), service setup
//! through the real map writer, packet builders and an independent checker
//! (etherparse).
#![allow(dead_code)]

use std::{
    ffi::CString,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
use lb::datapath::{
    DatapathMaps, KernelMaps,
    loader::{Datapath, LoadOptions},
};
use lb_common::{
    Backend4, Frontend4Key, FrontendValue, MAGLEV_TABLE_SIZE, PROTO_TCP, PROTO_UDP, reason::Reason,
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
/// What lb_tc_egress returns for every packet it lets through (tcx: run
/// the next program, else pass).
pub const TCX_NEXT: i32 = -1;
pub const TC_ACT_SHOT: i32 = 2;

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique name for this test process and call: `lb-test-<pid>-<n>`.
pub fn unique_name() -> String {
    format!(
        "lb-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Mounts bpffs on /sys/fs/bpf when a fresh machine has not (the tests run
/// as root, like CI).
pub fn ensure_bpffs() {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("reading /proc/mounts");
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        return;
    }
    let (src, target, fstype) = (c"bpf", c"/sys/fs/bpf", c"bpf");
    // SAFETY: valid C strings, no data.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    assert_eq!(
        rc,
        0,
        "mount -t bpf bpf /sys/fs/bpf: {}",
        std::io::Error::last_os_error()
    );
}

/// A datapath loaded under `/sys/fs/bpf/lb-test-<pid>-<n>`, with its maps
/// opened through the real writer. Everything pinned is removed on drop.
pub struct TestDatapath {
    pub dp: Option<Datapath>,
    pub maps: KernelMaps,
    pub pin_dir: PathBuf,
}

impl TestDatapath {
    pub fn load() -> TestDatapath {
        Self::load_with(8, 4096)
    }

    pub fn load_with(max_tables: u32, ct_entries: u32) -> TestDatapath {
        ensure_bpffs();
        let pin_dir = Path::new("/sys/fs/bpf").join(unique_name());
        Self::load_at(pin_dir, max_tables, ct_entries).expect("loading the datapath")
    }

    /// Loads at an explicit pin directory (which the guard then owns).
    pub fn load_at(
        pin_dir: PathBuf,
        max_tables: u32,
        ct_entries: u32,
    ) -> anyhow::Result<TestDatapath> {
        let opts = LoadOptions {
            max_tables,
            ct_entries,
            ..LoadOptions::default()
        };
        Self::load_at_with(pin_dir, opts)
    }

    /// Loads at an explicit pin directory with any options (`pin_dir` in
    /// them is replaced).
    pub fn load_at_with(pin_dir: PathBuf, opts: LoadOptions) -> anyhow::Result<TestDatapath> {
        // The guard exists before the load, so a half-created directory is
        // removed too.
        let cleanup = PinGuard(pin_dir.clone());
        let dp = Datapath::load(&LoadOptions {
            pin_dir: Some(pin_dir.clone()),
            ..opts
        })?;
        let maps = dp.maps()?;
        std::mem::forget(cleanup);
        Ok(TestDatapath {
            dp: Some(dp),
            maps,
            pin_dir,
        })
    }

    pub fn dp(&self) -> &Datapath {
        self.dp.as_ref().unwrap()
    }

    pub fn dp_mut(&mut self) -> &mut Datapath {
        self.dp.as_mut().unwrap()
    }

    pub fn stat(&self, reason: Reason) -> u64 {
        self.maps.stat(reason).unwrap()
    }

    /// Every non-zero counter.
    pub fn nonzero_stats(&self) -> Vec<(Reason, u64)> {
        self.maps
            .stats()
            .unwrap()
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .collect()
    }

    pub fn run_xdp(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.dp().run_xdp(frame).expect("BPF_PROG_TEST_RUN (xdp)")
    }

    pub fn run_tc(&self, frame: &[u8]) -> (i32, Vec<u8>) {
        self.dp()
            .run_tc_egress(frame)
            .expect("BPF_PROG_TEST_RUN (tc)")
    }
}

impl Drop for TestDatapath {
    fn drop(&mut self) {
        drop(self.dp.take());
        let _ = PinGuard(self.pin_dir.clone());
    }
}

/// Removes a pin directory (links, maps, the directory) on drop.
pub struct PinGuard(pub PathBuf);

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Err(err) = Datapath::detach_all(&self.0) {
            eprintln!("cleanup of {}: {err:#}", self.0.display());
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

pub fn be32(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

pub fn be16(port: u16) -> u16 {
    port.to_be()
}

pub fn frontend_key(addr: Ipv4Addr, port: u16, proto: u8, scope: u8) -> Frontend4Key {
    Frontend4Key {
        addr_be: be32(addr),
        port_be: be16(port),
        proto,
        scope,
    }
}

pub fn backend(addr: Ipv4Addr, port: u16, proto: u8) -> Backend4 {
    Backend4 {
        addr_be: be32(addr),
        port_be: be16(port),
        proto,
        flags: 0,
    }
}

/// A Maglev table by round-robin over `ids` (the kernel only indexes it).
pub fn round_robin(ids: &[u32]) -> Vec<u32> {
    (0..MAGLEV_TABLE_SIZE as usize)
        .map(|slot| ids[slot % ids.len()])
        .collect()
}

/// Writes a service the way apply does: backends, then the table, then the
/// frontend flip.
pub fn install_service(
    maps: &mut KernelMaps,
    key: Frontend4Key,
    service_id: u32,
    table_id: u32,
    flags: u32,
    backends: &[(u32, Backend4)],
) {
    for (id, be) in backends {
        maps.set_backend(*id, be).unwrap();
    }
    if !backends.is_empty() {
        let ids: Vec<u32> = backends.iter().map(|(id, _)| *id).collect();
        maps.write_table(table_id, &round_robin(&ids)).unwrap();
    }
    let value = FrontendValue {
        service_id,
        table_id,
        backend_count: backends.len() as u32,
        flags,
    };
    maps.set_frontend(&key, &value).unwrap();
}

/// Two NodePorts on `node` with one backend each on `pod`: TCP 30080 ->
/// 8080 (Service 1, backend 1, table 0) and UDP 30053 -> 53 (Service 2,
/// backend 2, table 1).
pub fn tcp_and_udp_node_ports(t: &mut TestDatapath, node: Ipv4Addr, pod: Ipv4Addr) {
    use lb_common::SCOPE_EXTERNAL;
    install_service(
        &mut t.maps,
        frontend_key(node, 30080, PROTO_TCP, SCOPE_EXTERNAL),
        1,
        0,
        0,
        &[(1, backend(pod, 8080, PROTO_TCP))],
    );
    install_service(
        &mut t.maps,
        frontend_key(node, 30053, PROTO_UDP, SCOPE_EXTERNAL),
        2,
        1,
        0,
        &[(2, backend(pod, 53, PROTO_UDP))],
    );
}

pub fn tcp_frame(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    syn: bool,
    payload: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, NODE_MAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 0x1234_5678, 65535);
    let builder = if syn {
        builder.syn()
    } else {
        builder.ack(0x0bad_cafe)
    };
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).unwrap();
    out
}

/// A TCP frame with exactly `flags` (`lb_common::packet::tcp::*`).
pub fn tcp_flags_frame(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    use lb_common::packet::tcp;
    let mut builder = PacketBuilder::ethernet2(CLIENT_MAC, NODE_MAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 0x1234_5678, 65535);
    if flags & tcp::SYN != 0 {
        builder = builder.syn();
    }
    if flags & tcp::ACK != 0 {
        builder = builder.ack(0x0bad_cafe);
    }
    if flags & tcp::FIN != 0 {
        builder = builder.fin();
    }
    if flags & tcp::RST != 0 {
        builder = builder.rst();
    }
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).unwrap();
    out
}

pub fn udp_frame(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    payload: &[u8],
    checksum: bool,
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, NODE_MAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).unwrap();
    if !checksum {
        out[14 + 20 + 6] = 0;
        out[14 + 20 + 7] = 0;
    }
    out
}

/// A packet as an independent parser sees it, after checking its IPv4 and
/// transport checksums.
#[derive(Debug)]
pub struct Checked {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub l4_checksum: u16,
    pub payload: Vec<u8>,
}

/// Parses `frame` with etherparse and asserts that the IPv4 header checksum
/// and the TCP/UDP checksum (unless a UDP checksum is 0) are valid.
pub fn check_frame(frame: &[u8]) -> Checked {
    let headers =
        PacketHeaders::from_ethernet_slice(frame).expect("etherparse cannot parse the output");
    let Some(NetHeaders::Ipv4(ip, _)) = &headers.net else {
        panic!("not IPv4: {:?}", headers.net)
    };
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "IPv4 header checksum"
    );
    let payload = headers.payload.slice().to_vec();
    let (sport, dport, proto, l4_checksum) = match &headers.transport {
        Some(TransportHeader::Tcp(tcp)) => {
            let expected = tcp.calc_checksum_ipv4(ip, &payload).unwrap();
            // 0x0000 and 0xffff are the same one's complement value.
            let ok = tcp.checksum == expected
                || (tcp.checksum | expected == 0xffff && tcp.checksum & expected == 0);
            assert!(
                ok,
                "TCP checksum {:#06x}, expected {expected:#06x}",
                tcp.checksum
            );
            (
                tcp.source_port,
                tcp.destination_port,
                PROTO_TCP,
                tcp.checksum,
            )
        }
        Some(TransportHeader::Udp(udp)) => {
            if udp.checksum != 0 {
                let expected = udp.calc_checksum_ipv4(ip, &payload).unwrap();
                assert_eq!(udp.checksum, expected, "UDP checksum");
            }
            (
                udp.source_port,
                udp.destination_port,
                PROTO_UDP,
                udp.checksum,
            )
        }
        other => panic!("not TCP/UDP: {other:?}"),
    };
    Checked {
        src: Ipv4Addr::from(ip.source),
        dst: Ipv4Addr::from(ip.destination),
        sport,
        dport,
        proto,
        l4_checksum,
        payload,
    }
}

/// The cgroup v2 mount point (`/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("reading /proc/mounts");
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| PathBuf::from(f[1]))
        .expect("no cgroup2 mount")
}

/// A cgroup v2 directory created for one test, removed on drop (after the
/// processes moved into it have exited).
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn create() -> TestCgroup {
        let path = cgroup2_root().join(unique_name());
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
        TestCgroup { path }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // rmdir fails while a process is inside: retry briefly while
        // children finish exiting.
        for _ in 0..50 {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
        eprintln!("could not remove cgroup {}", self.path.display());
    }
}

/// Moves the calling process into `cgroup`.
pub fn enter_cgroup(cgroup: &Path) {
    std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
        .unwrap_or_else(|e| panic!("entering cgroup {}: {e}", cgroup.display()));
}

/// Runs the test `name` of this very binary as a child process with the
/// environment `env` (the child side of a test reads it; in a normal run
/// it returns at once), and returns what the child printed between `<<<`
/// and `>>>`.
pub fn child_says(name: &str, env: &[(&str, String)]) -> String {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed: {stdout}");
    stdout
        .split("<<<")
        .nth(1)
        .and_then(|s| s.split(">>>").next())
        .expect("child output")
        .to_owned()
}

pub fn cstr(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// What a pinned link points at, read with raw `bpf(2)` calls (aya does not
/// expose the target): `(program id, target)`, where the target is the
/// ifindex of an XDP/tcx link or the cgroup id of a cgroup link, and 0 once
/// the target is gone (the link is defunct).
pub fn pinned_link_info(pin: &Path) -> (u32, u64) {
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    #[repr(C)]
    struct GetInfo {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let path = cstr(pin.to_str().unwrap());
    let attr = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: a valid attr of the size passed.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, &attr, size_of::<ObjGet>()) };
    assert!(
        fd >= 0,
        "BPF_OBJ_GET {}: {}",
        pin.display(),
        std::io::Error::last_os_error()
    );
    let mut info = [0u64; 16];
    let attr = GetInfo {
        bpf_fd: fd as u32,
        info_len: size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: as above; the kernel writes at most info_len bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &attr,
            size_of::<GetInfo>(),
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: our descriptor.
    unsafe { libc::close(fd as i32) };
    assert_eq!(rc, 0, "BPF_OBJ_GET_INFO_BY_FD: {err}");
    // struct bpf_link_info { u32 type, id, prog_id; union (8-aligned) { ... } }
    let prog_id = (info[1] & 0xffff_ffff) as u32;
    let link_type = (info[0] & 0xffff_ffff) as u32;
    const BPF_LINK_TYPE_CGROUP: u32 = 3;
    let target = if link_type == BPF_LINK_TYPE_CGROUP {
        info[2]
    } else {
        info[2] & 0xffff_ffff
    };
    (prog_id, target)
}

/// Runs `f` on a thread inside a network namespace of its own (only `lo`,
/// down), so attaching to its `lo` touches none of this machine's
/// interfaces. The namespace goes away with the thread.
pub fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: affects only this thread.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            );
            f()
        })
        .join()
        .unwrap()
    })
}

/// Polls `cond` for up to two seconds.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

/// Each backend id in the maps with its address.
#[allow(dead_code)]
pub fn backend_addresses(maps: &KernelMaps) -> std::collections::BTreeMap<u32, Ipv4Addr> {
    maps.backends()
        .unwrap()
        .into_iter()
        .map(|(id, b)| (id, Ipv4Addr::from(b.addr_be.to_ne_bytes())))
        .collect()
}

/// Plans and applies the Services and EndpointSlices of `yaml` (one
/// manifest file) for a node named `node-a` at `node`, as the agent does:
/// the real desired state, plan and writer. The plan must go through
/// whole; returns the desired state's problems.
#[allow(dead_code)]
pub fn serve_manifests(
    maps: &mut KernelMaps,
    applied: &mut lb::plan::Applied,
    yaml: &str,
    node: Ipv4Addr,
) -> Vec<lb::model::Problem> {
    let (problems, plan) = apply_manifests(maps, applied, yaml, node);
    assert_eq!(plan.problems, vec![], "{plan}");
    problems
}

/// A NodePort Service `name` in namespace `lb` (port 80 -> 8080 at
/// ClusterIP `cluster_ip` and `node_port`) over one slice of `endpoints`
/// on node-a, served with [`serve_manifests`]; it must go through whole.
#[allow(dead_code)]
pub fn serve_node_port(
    maps: &mut KernelMaps,
    applied: &mut lb::plan::Applied,
    (name, cluster_ip, node_port): (&str, Ipv4Addr, u16),
    endpoints: &[Ipv4Addr],
    node: Ipv4Addr,
) {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|addr| format!("{{addresses: [{addr}], nodeName: node-a}}"))
        .collect();
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: lb}}\nspec: {{type: NodePort, clusterIP: {cluster_ip}, ports: [{{name: http, port: 80, targetPort: 8080, nodePort: {node_port}}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: lb, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{}]\n",
        endpoints.join(", ")
    );
    assert_eq!(serve_manifests(maps, applied, &yaml, node), vec![]);
}

/// [`serve_manifests`] for the node `facts` under the cluster's `rules`.
#[allow(dead_code)]
pub fn serve_manifests_as(
    maps: &mut KernelMaps,
    applied: &mut lb::plan::Applied,
    yaml: &str,
    facts: &lb::model::NodeFacts,
    rules: &lb::desired::Rules,
) -> Vec<lb::model::Problem> {
    let (problems, plan) = apply_manifests_as(maps, applied, yaml, facts, rules);
    assert_eq!(plan.problems, vec![], "{plan}");
    problems
}

/// Like `serve_manifests`, but the plan may leave Service ports out: returns
/// the desired state's problems and the applied plan (with its own).
#[allow(dead_code)]
pub fn apply_manifests(
    maps: &mut KernelMaps,
    applied: &mut lb::plan::Applied,
    yaml: &str,
    node: Ipv4Addr,
) -> (Vec<lb::model::Problem>, lb::plan::Plan) {
    let facts = lb::model::NodeFacts {
        name: "node-a".into(),
        addresses: vec![node.into()],
        zone: None,
    };
    apply_manifests_as(maps, applied, yaml, &facts, &lb::desired::Rules::default())
}

/// [`apply_manifests`] for the node `facts` under the cluster's `rules`.
#[allow(dead_code)]
pub fn apply_manifests_as(
    maps: &mut KernelMaps,
    applied: &mut lb::plan::Applied,
    yaml: &str,
    facts: &lb::model::NodeFacts,
    rules: &lb::desired::Rules,
) -> (Vec<lb::model::Problem>, lb::plan::Plan) {
    let set = lb::source::manifests::parse_documents("served.yaml", yaml);
    let state = lb::desired::compute(
        &set.services,
        &set.slices,
        facts,
        rules,
        &lb::desired::Holders::default(),
    );
    let plan = lb::plan::plan(&state, applied, maps.max_tables());
    lb::plan::apply(&plan, maps, applied).unwrap();
    (state.problems, plan)
}

/// `memlock:` of a map, as the kernel accounts it (`/proc/self/fdinfo`).
#[allow(dead_code)]
pub fn memlock(map: &aya::maps::MapData) -> u64 {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let fd = map.fd().as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The unseeded flow hash the datapath selects a TCP flow's slot by:
/// `client:sport -> node:node_port`.
pub fn tcp_flow_hash(client: Ipv4Addr, sport: u16, node: Ipv4Addr, node_port: u16) -> u32 {
    lb_common::flow_hash::flow_hash4_seeded(
        0,
        be32(client),
        be32(node),
        be16(sport),
        be16(node_port),
        lb_common::PROTO_TCP,
    )
}

/// `frame` (Ethernet, a 20-byte IPv4 header) with 8 bytes of IP options
/// (NOP NOP NOP NOP, end of list) after the fixed header: ihl 7, the
/// transport header moved, total length and header checksum redone.
#[allow(dead_code)]
pub fn with_ip_options(frame: &[u8]) -> Vec<u8> {
    let mut out = frame[..34].to_vec();
    out.extend_from_slice(&[1, 1, 1, 1, 0, 0, 0, 0]);
    out.extend_from_slice(&frame[34..]);
    out[14] = 0x47;
    let tot_len = u16::from_be_bytes([out[16], out[17]]) + 8;
    out[16..18].copy_from_slice(&tot_len.to_be_bytes());
    out[24..26].copy_from_slice(&[0, 0]);
    let sum = ipv4_header_checksum(&out[14..14 + 28]);
    out[24..26].copy_from_slice(&sum.to_be_bytes());
    out
}

#[allow(dead_code)]
pub fn ipv4_header_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
