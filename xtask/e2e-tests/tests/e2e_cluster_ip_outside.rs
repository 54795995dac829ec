//! End-to-end: a ClusterIP reached from outside. The testbed's client
//! routes the service range (ClusterIPs included) through the node, as a
//! router sending the Service CIDR to a node would; kube-proxy DNATs it
//! (its `services` chain hangs off nat-prerouting) and masquerades it when
//! the source is outside `--cluster-cidr` (TestInternalExternalMasquerade
//! "external to ClusterIP": masq true with a detector), keeping the
//! client's address when the source is inside it ("pod to ClusterIP":
//! masq false). Real TCP and UDP through the real agent on two nodes.

use std::fs;

use xtask::{
    demo_env::{Env, exclusive_env_on},
    manifests,
    testbed::{
        CLIENT_ADDR, NODE_ADDR, NODE_LINK_DEVICE, POD_BRIDGE, POD_TCP_PORT, POD_UDP_PORT, Testbed,
        pod_name, remote_pod_name,
    },
    traffic::tally,
};

/// Served on both nodes (internalTrafficPolicy Cluster).
const ROUTED: &str = "192.0.2.41";
/// Served by this node's pod only (internalTrafficPolicy Local).
const ROUTED_LOCAL: &str = "192.0.2.42";
/// Both nodes' pod subnets (203.0.113.0/24 here, 203.0.114.0/24 on node-b).
const POD_CIDR: &str = "203.0.112.0/22";

/// A ClusterIP Service with `policy`, one endpoint here and two on node-b.
fn service(name: &str, cluster_ip: &str, policy: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  clusterIP: {cluster_ip}
  internalTrafficPolicy: {policy}
  ports:
    - {{name: http, protocol: TCP, port: 80, targetPort: {POD_TCP_PORT}}}
    - {{name: dns, protocol: UDP, port: 53, targetPort: {POD_UDP_PORT}}}
---
{}",
        manifests::two_node_slice(name, &manifests::pod_slice_ports()),
    )
}

/// The demo's Services (the environment waits for their NodePort), and
/// the two routed ClusterIPs.
fn write(dir: &std::path::Path) -> anyhow::Result<()> {
    manifests::write_demo(dir, &[0])?;
    fs::write(
        dir.join("routed.yaml"),
        service("routed", ROUTED, "Cluster"),
    )?;
    fs::write(
        dir.join("routed-local.yaml"),
        service("routed-local", ROUTED_LOCAL, "Local"),
    )?;
    Ok(())
}

/// The two nodes and the agent, attached where masqueraded replies come
/// back (the link to node-b, the pods' bridge), with `--cluster-cidr`.
fn two_nodes(cluster_cidr: &str) -> (std::sync::MutexGuard<'static, ()>, Env) {
    exclusive_env_on(
        || Testbed::with_remote_node(1, 2),
        write,
        &[
            "--device",
            NODE_LINK_DEVICE,
            "--pod-device",
            POD_BRIDGE,
            "--cluster-cidr",
            cluster_cidr,
        ],
    )
}

/// `count` requests of `proto` from the client to `addr:port`: each
/// answer ("<pod> from <source it saw>") and how often.
fn ask(env: &Env, proto: &str, addr: &str, port: u16, count: u32) -> xtask::traffic::Tally {
    let mut cmd = env.bed.from_client(&env.probe);
    cmd.args(["--timeout-ms", "2000", proto])
        .arg(format!("{addr}:{port}"))
        .args(["--count", &count.to_string()]);
    let tally = tally(&mut cmd).unwrap();
    assert!(
        tally.errors.is_empty(),
        "{proto} to {addr}:{port}: {:?}\n{}",
        tally.errors,
        env.agent_log_text()
    );
    tally
}

/// The client is outside `--cluster-cidr`: every connection to the
/// ClusterIP is masqueraded, so pods on both nodes answer, and every one
/// sees node-a's address.
#[test]
fn from_outside_the_cluster_cidr_pods_see_the_node_address() {
    let (_serial, env) = two_nodes(POD_CIDR);
    let mut pods = vec![pod_name(0)];
    pods.extend((0..2).map(remote_pod_name));
    for (proto, port) in [("tcp", 80), ("udp", 53)] {
        let tally = ask(&env, proto, ROUTED, port, 40);
        assert_eq!(tally.total(), 40, "{proto}");
        let want: Vec<String> = pods
            .iter()
            .map(|p| format!("{p} from {NODE_ADDR}"))
            .collect();
        for answer in tally.answers.keys() {
            assert!(want.contains(answer), "{proto}: {:?}", tally.answers);
        }
        assert!(
            tally.answers.contains_key(&want[0]) && tally.answers.len() > 1,
            "{proto}: pods of both nodes are chosen in 40 (all but certainly): {:?}",
            tally.answers
        );
    }
}

/// The client is inside `--cluster-cidr` (counted as a pod): not
/// masqueraded, so this node's pod sees the client's own address
/// (internalTrafficPolicy Local keeps the flow on this node, whose reverse
/// translation answers the client from the ClusterIP).
#[test]
fn from_inside_the_cluster_cidr_the_pod_sees_the_client_address() {
    let (_serial, env) = two_nodes(&format!("{CLIENT_ADDR}/32"));
    for (proto, port) in [("tcp", 80), ("udp", 53)] {
        let tally = ask(&env, proto, ROUTED_LOCAL, port, 20);
        assert_eq!(
            tally.answers.keys().collect::<Vec<_>>(),
            vec![&format!("{} from {CLIENT_ADDR}", pod_name(0))],
            "{proto}"
        );
    }
}
