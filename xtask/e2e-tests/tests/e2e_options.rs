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
    demo::{Env, exclusive_env},
    testbed::{NODE_ADDR, NODE_NAME, POD_TCP_PORT, pod_addr},
};

const HEALTH_CHECK_PORT: u16 = 32100;

/// A LoadBalancer with `externalTrafficPolicy: Local` and its
/// healthCheckNodePort, with the given pods (all on this node) as ready
/// endpoints.
fn health_checked(pods: &[usize]) -> String {
    let endpoints: String = pods
        .iter()
        .map(|&i| {
            format!(
                "- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n  nodeName: {NODE_NAME}\n",
                pod_addr(i)
            )
        })
        .collect();
    let endpoints = if endpoints.is_empty() {
        " []\n".to_owned()
    } else {
        format!("\n{endpoints}")
    };
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
