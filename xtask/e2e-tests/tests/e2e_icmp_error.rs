//! End to end, ICMP errors (issue 10): a router on the client's side that
//! cannot forward a pod's reply says "fragmentation needed" to the
//! frontend's address it saw; lb sends the error on to the pod as the
//! error about the pod's own packet, so the pod's kernel lowers its path
//! MTU toward the client (RFC 1191), as it does behind kube-proxy, where
//! conntrack translates the related error (`nf_nat_icmp_reply_translation`).
//! The client's namespace stands in for the router: it crafts the error
//! with a raw socket (Python), quoting the reply it got from the NodePort.

use std::{
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use xtask::{
    demo_env::exclusive_env_with,
    manifests,
    testbed::{CLIENT_ADDR, NODE_ADDR},
    traffic::tally,
};

/// The demo's UDP NodePort (web-nodeport:dns).
const NODE_PORT: u16 = 30053;
const CLIENT_PORT: u16 = 41053;
const MTU: u16 = 1000;

/// A frag-needed (next-hop MTU `MTU`) to the node, quoting the reply
/// NODE:NODE_PORT -> CLIENT:CLIENT_PORT (its IPv4 header and UDP header).
fn router_script() -> String {
    format!(
        "import socket, struct
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
node, client = socket.inet_aton('{NODE_ADDR}'), socket.inet_aton('{CLIENT_ADDR}')
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 1400, 7, 0x4000, 63, 17, 0, node, client)
ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
udp = struct.pack('!HHHH', {NODE_PORT}, {CLIENT_PORT}, 1380, 0)
icmp = struct.pack('!BBHHH', 3, 4, 0, 0, {MTU}) + ip + udp
icmp = icmp[:2] + struct.pack('!H', csum(icmp)) + icmp[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.sendto(icmp, ('{NODE_ADDR}', 0))
"
    )
}

fn in_ns(ns: &Path) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", ns.display()));
    cmd
}

/// What the pod's namespace routes toward the client (`ip route get`).
fn route_to_client(pod_ns: &Path) -> String {
    let out = in_ns(pod_ns)
        .args(["ip", "route", "get", &CLIENT_ADDR.to_string()])
        .output()
        .expect("ip route get in the pod's namespace");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_frag_needed_from_the_client_side_lowers_the_pods_path_mtu() {
    let (_serial, env) = exclusive_env_with(|dir| manifests::write_demo(dir, &[0, 1, 2]), &[]);
    let mut cmd = env.bed.from_client(&env.probe);
    cmd.args(["--timeout-ms", "2000", "udp"])
        .arg(format!("{NODE_ADDR}:{NODE_PORT}"))
        .args(["--source-port", &CLIENT_PORT.to_string()]);
    let answered = tally(&mut cmd).unwrap();
    assert!(answered.errors.is_empty(), "{:?}", answered.errors);
    // "pod-N", or "pod-N from ADDR".
    let pod = answered.answers.keys().next().unwrap();
    let name = pod.split_whitespace().next().unwrap();
    let index = name.trim_start_matches("pod-").parse::<usize>().unwrap() - 1;
    let pod_ns = env.bed.netns_path(&env.bed.pod_ns(index));
    let mtu = format!("mtu {MTU}");
    assert!(
        !route_to_client(&pod_ns).contains(&mtu),
        "no lowered MTU yet"
    );

    let client_ns = env.bed.netns_path(&env.bed.client_ns());
    let out = in_ns(&client_ns)
        .args(["python3", "-c", &router_script()])
        .output()
        .expect("python3 in the client's namespace");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let deadline = Instant::now() + Duration::from_secs(3);
    let route = loop {
        let route = route_to_client(&pod_ns);
        if route.contains(&mtu) || Instant::now() > deadline {
            break route;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert!(
        route.contains(&mtu),
        "{pod}'s route to the client: {route}\n{}",
        env.agent_log_text()
    );
}
