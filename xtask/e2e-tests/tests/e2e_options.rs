//! End-to-end, Service options kube-proxy honours: the real agent in the
//! namespace topology (root, bounded waits, full cleanup, as `e2e.rs`).

use std::{
    fs,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use xtask::{
    demo::{Env, Frontend, Origin, exclusive_env},
    testbed::{CLIENT_ADDR, NODE_ADDR, NODE_NAME, POD_TCP_PORT, pod_addr},
};

const HEALTH_CHECK_PORT: u16 = 32100;

/// A LoadBalancer with `externalTrafficPolicy: Local` and its
/// healthCheckNodePort, with the given pods (all on this node) as ready
/// endpoints.
fn health_checked(pods: &[usize]) -> String {
    let endpoints = ready_endpoints(pods);
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: checked, namespace: default}}
spec:
  type: LoadBalancer
  clusterIP: 192.0.2.30
  externalTrafficPolicy: Local
  healthCheckNodePort: {HEALTH_CHECK_PORT}
  ports: [{{name: http, protocol: TCP, port: 80, targetPort: {POD_TCP_PORT}, nodePort: 30100}}]
status: {{loadBalancer: {{ingress: [{{ip: 192.0.2.130}}]}}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: checked-1
  namespace: default
  labels: {{kubernetes.io/service-name: checked}}
addressType: IPv4
ports: [{{name: http, protocol: TCP, port: {POD_TCP_PORT}}}]
endpoints:{endpoints}"
    )
}

/// The `endpoints:` value listing `pods` as ready endpoints on this node
/// (an empty list when there are none).
fn ready_endpoints(pods: &[usize]) -> String {
    if pods.is_empty() {
        return " []\n".to_owned();
    }
    let listed: String = pods
        .iter()
        .map(|&i| {
            format!(
                "- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n  nodeName: {NODE_NAME}\n",
                pod_addr(i)
            )
        })
        .collect();
    format!("\n{listed}")
}

/// Replaces a manifest atomically (write then rename), as the agent reads.
fn write_atomically(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, dir.join(name)).unwrap();
}

/// GETs the health-check port from the external client, through the
/// node's XDP-attached device: (status, headers and body as text).
fn probe_health_check(env: &Env) -> (u16, String) {
    let url = format!("http://{NODE_ADDR}:{HEALTH_CHECK_PORT}/");
    let out = Command::new("nsenter")
        .arg(format!(
            "--net={}",
            env.bed.netns_path(&env.bed.client_ns()).display()
        ))
        .args(["curl", "-s", "-i", "--max-time", "2", &url])
        .output()
        .expect("running curl in the client namespace");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Waits (at most 10 s) until the health-check port answers `status`.
fn wait_for_status(env: &Env, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (now, text) = probe_health_check(env);
        if now == status {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the health-check port never answered {status} (last: {now} {text:?}):\n{}",
            env.agent_log_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Upstream: pkg/proxy/healthcheck/service_health.go: the Service's
/// healthCheckNodePort answers 200 with `localEndpoints` while this node
/// has a ready endpoint, and 503 once the last one leaves (the
/// EndpointSlice rewritten); the packets reach the agent's server
/// untranslated, through the XDP program on the node's device.
#[test]
fn the_health_check_port_answers_200_then_503_as_the_last_local_endpoint_leaves() {
    let (_serial, env) = exclusive_env();
    let dir = env.manifests();
    write_atomically(&dir, "checked.yaml", &health_checked(&[0]));
    let ok = wait_for_status(&env, 200);
    let headers = ok.to_ascii_lowercase();
    for header in [
        "content-type: application/json",
        "x-content-type-options: nosniff",
        "x-load-balancing-endpoint-weight: 1",
    ] {
        assert!(headers.contains(header), "{header}: {ok}");
    }
    assert!(
        ok.contains("\"namespace\": \"default\",\n\t\t\"name\": \"checked\"")
            && ok.contains("\"localEndpoints\": 1,\n\t\"serviceProxyHealthy\": true"),
        "{ok}"
    );

    write_atomically(&dir, "checked.yaml", &health_checked(&[]));
    let unavailable = wait_for_status(&env, 503);
    assert!(
        unavailable.contains("\"localEndpoints\": 0,\n\t\"serviceProxyHealthy\": true"),
        "{unavailable}"
    );

    // The Service goes: its port closes.
    fs::remove_file(dir.join("checked.yaml")).unwrap();
    wait_for_status(&env, 0);
}

/// A NodePort with `sessionAffinity: ClientIP` over the given pods.
fn sticky(pods: &[usize]) -> String {
    let endpoints = ready_endpoints(pods);
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: sticky, namespace: default}}
spec:
  type: NodePort
  clusterIP: 192.0.2.31
  sessionAffinity: ClientIP
  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 600}}}}
  ports: [{{name: http, protocol: TCP, port: 80, targetPort: {POD_TCP_PORT}, nodePort: 30110}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: sticky-1
  namespace: default
  labels: {{kubernetes.io/service-name: sticky}}
addressType: IPv4
ports: [{{name: http, protocol: TCP, port: {POD_TCP_PORT}}}]
endpoints:{endpoints}"
    )
}

const STICKY_NODE_PORT: Frontend = Frontend {
    label: "NodePort sticky:http",
    origin: Origin::Client,
    udp: false,
    addr: "198.51.100.1:30110",
};

const STICKY_CLUSTER_IP: Frontend = Frontend {
    label: "ClusterIP sticky:http",
    origin: Origin::Pod(0),
    udp: false,
    addr: "192.0.2.31:80",
};

/// The pods `count` new connections to `frontend` reached; waits (at most
/// 10 s) for the frontend to answer first.
fn pods_reached(env: &Env, frontend: &Frontend, count: u32) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.request(frontend, 1).unwrap().errors.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} never answered:\n{}",
            frontend.label,
            env.agent_log_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let tally = env.request(frontend, count).unwrap();
    assert!(tally.errors.is_empty(), "{:?}", tally.errors);
    tally.answers.into_keys().collect()
}

fn affinity_entries(env: &Env) -> Vec<serde_json::Value> {
    let out = Command::new(&env.lb)
        .args(["affinity", "list", "-o", "json", "--pin-dir"])
        .arg(&env.bed.pin_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Upstream: pkg/proxy/iptables/proxier.go's ClientIP affinity (`-m recent
/// --rcheck --seconds 600` before the random pick, `--set` per endpoint):
/// every new TCP connection of one client reaches one pod, from outside
/// (XDP) and from a pod (socket hooks), while the demo's Services without
/// affinity spread the same connections over three pods; when the
/// remembered pod leaves, the client is kept on a new one.
#[test]
fn client_ip_affinity_keeps_new_connections_on_one_pod_until_it_leaves() {
    let (_serial, env) = exclusive_env();
    let dir = env.manifests();
    write_atomically(&dir, "sticky.yaml", &sticky(&[0, 1, 2]));
    let external = pods_reached(&env, &STICKY_NODE_PORT, 12);
    assert_eq!(external.len(), 1, "from outside: {external:?}");
    let internal = pods_reached(&env, &STICKY_CLUSTER_IP, 12);
    assert_eq!(internal.len(), 1, "from a pod: {internal:?}");
    let entries = affinity_entries(&env);
    let client = entries
        .iter()
        .find(|e| e["client"] == CLIENT_ADDR.to_string())
        .unwrap_or_else(|| panic!("no entry of the client: {entries:?}"));
    assert_eq!(client["service"], "default/sticky:http");
    assert!(
        entries
            .iter()
            .any(|e| e["client"].as_str().unwrap().starts_with("netns:"))
    );

    // The remembered pod leaves the Service: a new one, and only one.
    let kept = external[0]
        .trim_start_matches("pod-")
        .parse::<usize>()
        .unwrap()
        - 1;
    let rest: Vec<usize> = (0..3).filter(|i| *i != kept).collect();
    write_atomically(&dir, "sticky.yaml", &sticky(&rest));
    let deadline = Instant::now() + Duration::from_secs(10);
    let moved = loop {
        let now = pods_reached(&env, &STICKY_NODE_PORT, 6);
        if !now.contains(&external[0]) {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "still sent to {now:?}:\n{}",
            env.agent_log_text()
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(moved.len(), 1, "{moved:?}");
}
