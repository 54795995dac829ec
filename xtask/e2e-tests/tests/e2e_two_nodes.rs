//! End-to-end on two nodes: the testbed's second node (node-b, its own
//! pods, routed like a flat pod network) next to the agent's node. Under
//! `externalTrafficPolicy: Local` an external client reaches only this
//! node's pods and they see the client's own address (kube-proxy's
//! TestExternalTrafficPolicyLocal "external to NodePort hits only local
//! endpoint, unmasqueraded"), with real TCP and UDP. Policy Cluster needs
//! the masquerade rewrite, which is not built yet (README, "Not built yet").

use std::fs;

use xtask::{
    demo_env::exclusive_env_on,
    manifests,
    testbed::{
        CLIENT_ADDR, NODE_ADDR, NODE_NAME, POD_TCP_PORT, POD_UDP_PORT, REMOTE_NODE_NAME, Testbed,
        pod_addr, remote_pod_addr,
    },
    traffic::tally,
};

const LOCAL_NODE_PORT: u16 = 30093;
const LOCAL_UDP_NODE_PORT: u16 = 30094;

/// One Service of policy Local with one endpoint on this node and two on
/// node-b.
fn spread_local() -> String {
    let endpoint = |addr: std::net::Ipv4Addr, node: &str| {
        format!(
            "  - addresses: [\"{addr}\"]\n    conditions: {{ready: true}}\n    nodeName: {node}\n"
        )
    };
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: spread-local, namespace: default}}
spec:
  type: NodePort
  clusterIP: 192.0.2.31
  externalTrafficPolicy: Local
  ports:
    - {{name: http, protocol: TCP, port: 80, targetPort: {POD_TCP_PORT}, nodePort: {LOCAL_NODE_PORT}}}
    - {{name: dns, protocol: UDP, port: 53, targetPort: {POD_UDP_PORT}, nodePort: {LOCAL_UDP_NODE_PORT}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: spread-local-1
  namespace: default
  labels: {{kubernetes.io/service-name: spread-local}}
addressType: IPv4
ports: [{{name: http, protocol: TCP, port: {POD_TCP_PORT}}}, {{name: dns, protocol: UDP, port: {POD_UDP_PORT}}}]
endpoints:
{}{}{}",
        endpoint(pod_addr(0), NODE_NAME),
        endpoint(remote_pod_addr(0), REMOTE_NODE_NAME),
        endpoint(remote_pod_addr(1), REMOTE_NODE_NAME),
    )
}

fn write(dir: &std::path::Path) -> anyhow::Result<()> {
    manifests::write_demo(dir, &[0, 1, 2])?;
    fs::write(dir.join("spread-local.yaml"), spread_local())?;
    Ok(())
}

#[test]
fn policy_local_uses_only_local_pods_and_keeps_the_client_address() {
    let (_serial, env) = exclusive_env_on(|| Testbed::with_remote_node(3, 2), write, &[]);
    let expected = format!("pod-1 from {CLIENT_ADDR}");
    for (proto, port) in [("tcp", LOCAL_NODE_PORT), ("udp", LOCAL_UDP_NODE_PORT)] {
        let mut cmd = env.bed.from_client(&env.probe);
        cmd.args(["--timeout-ms", "1000", proto])
            .arg(format!("{NODE_ADDR}:{port}"))
            .args(["--count", "20"]);
        let tally = tally(&mut cmd).unwrap();
        assert!(tally.errors.is_empty(), "{proto}: {:?}", tally.errors);
        assert_eq!(
            tally.answers.keys().collect::<Vec<_>>(),
            vec![&expected],
            "{proto}: only the local pod, seeing the client's address\n{}",
            env.agent_log_text()
        );
    }
}

#[test]
fn the_second_node_is_a_flat_pod_network() {
    let (_serial, env) = exclusive_env_on(|| Testbed::with_remote_node(3, 2), write, &[]);
    // A pod here reaches a pod there by its own address, and is seen by it.
    let mut cmd = env.bed.from_pod(&env.probe, 0);
    cmd.args(["--timeout-ms", "1000", "tcp"])
        .arg(format!("{}:{POD_TCP_PORT}", remote_pod_addr(1)));
    let tally = tally(&mut cmd).unwrap();
    assert!(tally.errors.is_empty(), "{:?}", tally.errors);
    assert_eq!(
        tally.answers.keys().collect::<Vec<_>>(),
        vec![&format!("remote-pod-2 from {}", pod_addr(0))]
    );
}
