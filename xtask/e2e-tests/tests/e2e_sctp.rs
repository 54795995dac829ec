//! End-to-end, SCTP: the real agent in the namespace topology (root,
//! bounded waits, full cleanup, as `e2e.rs`). The kernel here has no SCTP
//! sockets, so both ends speak SCTP through raw sockets (Python, in the
//! client's and a pod's namespace): an INIT crafted in the client to a
//! NodePort arrives in the pod translated to the pod's port with a valid
//! CRC32c, and the pod's INIT ACK arrives in the client from the NodePort,
//! its CRC valid too. Each side checks the CRCs itself.
//!
//! Upstream rule: kube-proxy serves SCTP NodePorts as TCP and UDP ones
//! (nftables `service-nodeports`: `meta l4proto . th dport`).

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use xtask::{
    demo::exclusive_env_with,
    manifests,
    testbed::{CLIENT_ADDR, NODE_ADDR, NODE_NAME, pod_addr},
};

const NODE_PORT: u16 = 30132;
const TARGET_PORT: u16 = 9132;
const CLIENT_PORT: u16 = 5000;

fn sctp_service(dir: &Path) -> anyhow::Result<()> {
    manifests::write_demo(dir, &[0, 1, 2])?;
    let pod = pod_addr(0);
    let yaml = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: signalling, namespace: default}}
spec:
  type: NodePort
  clusterIP: 192.0.2.33
  ports: [{{name: s1ap, protocol: SCTP, port: {TARGET_PORT}, targetPort: {TARGET_PORT}, nodePort: {NODE_PORT}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: signalling-1
  namespace: default
  labels: {{kubernetes.io/service-name: signalling}}
addressType: IPv4
ports: [{{name: s1ap, protocol: SCTP, port: {TARGET_PORT}}}]
endpoints: [{{addresses: [\"{pod}\"], nodeName: {NODE_NAME}}}]
"
    );
    fs::write(dir.join("sctp.yaml"), yaml)?;
    Ok(())
}

/// CRC32c, packets and their check, for both scripts.
const PY_SCTP: &str = r#"
import socket, struct, sys, time
def crc32c(data):
    crc = 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82f63b78 if crc & 1 else 0)
    return crc ^ 0xffffffff
def packet(sport, dport, vtag, chunk):
    hdr = struct.pack('!HHII', sport, dport, vtag, 0) + chunk
    return hdr[:8] + struct.pack('<I', crc32c(hdr)) + hdr[12:]
def valid(sctp):
    return struct.unpack('<I', sctp[8:12])[0] == crc32c(sctp[:8] + bytes(4) + sctp[12:])
def chunk(kind, value):
    return struct.pack('!BBH', kind, 0, 4 + len(value)) + value
def receive(s, want_dport):
    while True:
        data, (src, _) = s.recvfrom(65535)
        sctp = data[(data[0] & 15) * 4:]
        sport, dport = struct.unpack('!HH', sctp[:4])
        if dport == want_dport:
            return src, sport, sctp
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 132)
"#;

/// The pod: answers every INIT to its port with an INIT ACK, printing
/// what it received.
fn pod_script() -> String {
    format!(
        "{PY_SCTP}
s.settimeout(20)
print('ready', flush=True)
while True:
    src, sport, sctp = receive(s, {TARGET_PORT})
    print(f'got {{src}} {{sport}} {{valid(sctp)}} {{sctp[12]}}', flush=True)
    ack = chunk(2, struct.pack('!IIHHI', 0x77, 65535, 1, 1, 9))
    s.sendto(packet({TARGET_PORT}, sport, struct.unpack('!I', sctp[16:20])[0], ack), (src, 0))
"
    )
}

/// The client: sends an INIT to the NodePort (again every half second,
/// while the agent programs the Service) until an answer comes, and prints
/// it.
fn client_script() -> String {
    format!(
        "{PY_SCTP}
s.settimeout(0.5)
init = chunk(1, struct.pack('!IIHHI', 0x5eed, 65535, 1, 1, 1))
deadline = time.time() + 15
while time.time() < deadline:
    s.sendto(packet({CLIENT_PORT}, {NODE_PORT}, 0, init), ('{NODE_ADDR}', 0))
    try:
        src, sport, sctp = receive(s, {CLIENT_PORT})
    except socket.timeout:
        continue
    print(f'reply {{src}} {{sport}} {{valid(sctp)}} {{sctp[12]}}', flush=True)
    sys.exit(0)
sys.exit('no answer from the NodePort')
"
    )
}

#[test]
fn sctp_through_a_node_port_reaches_the_pod_with_valid_crc32c() {
    let (_serial, mut env) = exclusive_env_with(sctp_service, &[]);
    let pod_ns = env.bed.netns_path(&env.bed.pod_ns(0));
    let client_ns = env.bed.netns_path(&env.bed.client_ns());
    let in_ns = |ns: &Path| {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", ns.display()));
        cmd
    };
    let mut pod = in_ns(&pod_ns)
        .args(["python3", "-c", &pod_script()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 in the pod's namespace");
    let (lines, seen) = mpsc::channel();
    let stdout = pod.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    env.bed.adopt(pod);
    assert_eq!(
        seen.recv_timeout(Duration::from_secs(10)).as_deref(),
        Ok("ready")
    );

    let out = in_ns(&client_ns)
        .args(["python3", "-c", &client_script()])
        .output()
        .expect("python3 in the client's namespace");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        env.agent_log_text()
    );
    // The client saw the NodePort answer, with a valid CRC32c, an INIT ACK.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("reply {NODE_ADDR} {NODE_PORT} True 2")
    );
    // The pod saw the client's INIT on its own port, with a valid CRC32c.
    let got = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(got, format!("got {CLIENT_ADDR} {CLIENT_PORT} True 1"));
}
