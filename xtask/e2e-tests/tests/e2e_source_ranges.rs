//! End-to-end, loadBalancerSourceRanges: the real agent in the namespace
//! topology (root, bounded waits, full cleanup, as `e2e.rs`), real TCP from
//! the external client inside and outside a range, and from a pod.

use std::{
    fs,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use xtask::{
    demo::{Env, Frontend, Origin, exclusive_env},
    testbed::{CLIENT_ADDR, NODE_NAME, POD_TCP_PORT, pod_addr},
};

/// A second address of the external client, just outside the range
/// `CLIENT_ADDR/32`.
const OUTSIDER: &str = "198.51.100.3";
const LB_IP: &str = "192.0.2.140";

fn guarded() -> String {
    let endpoints: String = (0..3)
        .map(|i| {
            format!(
                "- addresses: [\"{}\"]\n  nodeName: {NODE_NAME}\n",
                pod_addr(i)
            )
        })
        .collect();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: guarded, namespace: default}}
spec:
  type: LoadBalancer
  clusterIP: 192.0.2.32
  loadBalancerSourceRanges: [\" {CLIENT_ADDR}/32 \", \"{}/32\"]
  ports: [{{name: http, protocol: TCP, port: 80, targetPort: {POD_TCP_PORT}, nodePort: 30120}}]
status: {{loadBalancer: {{ingress: [{{ip: {LB_IP}}}]}}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: guarded-1
  namespace: default
  labels: {{kubernetes.io/service-name: guarded}}
addressType: IPv4
ports: [{{name: http, protocol: TCP, port: {POD_TCP_PORT}}}]
endpoints:
{endpoints}",
        pod_addr(1)
    )
}

/// One TCP request from the client namespace, its socket bound to
/// `source`: the pod's answer, or the error.
fn request_from(env: &Env, source: &str, target: &str) -> Result<String, String> {
    let (host, port) = target.split_once(':').unwrap();
    let script = format!(
        "import socket\ns = socket.socket()\ns.settimeout(1.5)\ns.bind(('{source}', 0))\n\
         s.connect(('{host}', {port}))\ns.sendall(b'hello\\n')\nprint(s.recv(64).decode().strip())\n"
    );
    let out = Command::new("nsenter")
        .arg(format!(
            "--net={}",
            env.bed.netns_path(&env.bed.client_ns()).display()
        ))
        .args(["python3", "-c", &script])
        .output()
        .expect("running python3 in the client namespace");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Upstream: pkg/proxy/nftables/proxier.go's firewall chain (`ip saddr
/// != { ranges } drop`, entries trimmed by `MapCIDRsByIPFamily`), reached
/// from the LoadBalancer IP's rule only: the client's address inside the
/// range reaches a pod, its second address just outside times out (the
/// SYN is dropped), the same outsider reaches the Service's NodePort; a
/// pod (its socket unbound, its source the pod's address by route) inside
/// a range reaches the LoadBalancer IP, one outside times out (kube-proxy
/// drops its packets too) while it reaches the Service's ClusterIP.
#[test]
fn load_balancer_source_ranges_filter_real_connections() {
    let (_serial, env) = exclusive_env();
    let client_ns = env.bed.client_ns();
    let add = Command::new("ip")
        .args([
            "-n",
            &client_ns,
            "addr",
            "add",
            &format!("{OUTSIDER}/24"),
            "dev",
            "eth0",
        ])
        .status()
        .unwrap();
    assert!(add.success());
    let dir = env.manifests();
    fs::write(dir.join(".guarded.tmp"), guarded()).unwrap();
    fs::rename(dir.join(".guarded.tmp"), dir.join("guarded.yaml")).unwrap();
    let lb = format!("{LB_IP}:80");
    let deadline = Instant::now() + Duration::from_secs(10);
    let inside = loop {
        match request_from(&env, &CLIENT_ADDR.to_string(), &lb) {
            Ok(pod) => break pod,
            Err(err) => assert!(
                Instant::now() < deadline,
                "the client inside the range never got through: {err}\n{}",
                env.agent_log_text()
            ),
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert!(inside.starts_with("pod-"), "{inside}");

    let outside = request_from(&env, OUTSIDER, &lb).unwrap_err();
    assert!(outside.contains("timed out"), "{outside}");
    let node_port = request_from(&env, OUTSIDER, "198.51.100.1:30120").unwrap();
    assert!(node_port.starts_with("pod-"), "{node_port}");

    let pod_to_lb = |pod| Frontend {
        label: "LoadBalancer guarded:http",
        origin: Origin::Pod(pod),
        udp: false,
        addr: "192.0.2.140:80",
    };
    let dropped = env.request(&pod_to_lb(0), 1).unwrap();
    assert_eq!(dropped.answers.len(), 0, "{dropped:?}");
    assert!(
        !dropped.errors.is_empty() && dropped.errors.iter().all(|e| e.contains("timed out")),
        "{:?}",
        dropped.errors
    );
    let admitted = env.request(&pod_to_lb(1), 3).unwrap();
    assert!(admitted.errors.is_empty(), "{:?}", admitted.errors);
    let pod_to_cluster_ip = Frontend {
        label: "ClusterIP guarded:http",
        origin: Origin::Pod(0),
        udp: false,
        addr: "192.0.2.32:80",
    };
    let reached = env.request(&pod_to_cluster_ip, 3).unwrap();
    assert!(reached.errors.is_empty(), "{:?}", reached.errors);

    // The outsider's SYN (and its retransmission) and pod 0's SYN.
    let count = env.reason_count("drop_source_range").unwrap();
    assert!(count >= 2, "{count}");
}
