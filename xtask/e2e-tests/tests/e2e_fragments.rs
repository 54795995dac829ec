//! End to end, IPv4 fragments (issue 10): 3,000-byte UDP datagrams to a
//! NodePort, fragmented by the client's kernel at the 1,500-byte MTU of
//! every testbed link, get their 3,000-byte answers, fragmented by the
//! pods' kernels, under both policies. Before, the issue measured 0
//! answers in 20: only a datagram's first fragment was translated, so the
//! pod never reassembled it. kube-proxy's netfilter reassembles before NAT
//! (`nf_defrag_ipv4`); lb translates every fragment alike, by the ports its
//! first one carried.
//!
//! Policy Local: the request's fragments are translated at XDP, the local
//! pod's answer's at tc egress. Policy Cluster (masqueraded, pods on both
//! nodes): the remote pods' answers come back through XDP on the link to
//! node-b (reverse SNAT), the local pod's through the pod hook on the
//! bridge.

use std::fs;

use xtask::{
    demo_env::exclusive_env_on,
    manifests,
    testbed::{
        CLIENT_ADDR, NODE_ADDR, NODE_LINK_DEVICE, POD_BRIDGE, POD_UDP_PORT, Testbed, pod_name,
        remote_pod_name,
    },
    traffic::tally,
};

const LOCAL_NODE_PORT: u16 = 30097;
const CLUSTER_NODE_PORT: u16 = 30098;
/// The datagram.
const SIZE: &str = "3000";

/// A NodePort Service over pod-1 (this node) and remote-pod-1..2 (node-b).
fn service(name: &str, policy: &str, node_port: u16) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  type: NodePort
  clusterIP: 192.0.2.{}
  externalTrafficPolicy: {policy}
  ports:
    - {{name: dns, protocol: UDP, port: 53, targetPort: {POD_UDP_PORT}, nodePort: {node_port}}}
---
{}",
        node_port - 30000,
        manifests::two_node_slice(
            name,
            &format!("[{{name: dns, protocol: UDP, port: {POD_UDP_PORT}}}]"),
        ),
    )
}

fn write(dir: &std::path::Path) -> anyhow::Result<()> {
    manifests::write_demo(dir, &[0, 1, 2])?;
    fs::write(
        dir.join("frag-local.yaml"),
        service("frag-local", "Local", LOCAL_NODE_PORT),
    )?;
    fs::write(
        dir.join("frag-cluster.yaml"),
        service("frag-cluster", "Cluster", CLUSTER_NODE_PORT),
    )?;
    Ok(())
}

/// The failure, both policies: 20 datagrams of 3,000 bytes each
/// get an answer of 3,000 bytes (lb-probe fails an answer of another
/// size), from the pods the policy allows, seeing the address it says
/// (kube-proxy's TestExternalTrafficPolicyLocal: the client's;
/// TestInternalExternalMasquerade "external to NodePort": the node's).
#[test]
fn fragmented_datagrams_through_a_node_port_get_their_fragmented_answers() {
    let (_serial, env) = exclusive_env_on(
        || Testbed::with_remote_node(3, 2),
        write,
        &["--device", NODE_LINK_DEVICE, "--pod-device", POD_BRIDGE],
    );
    let local = vec![format!("{} from {CLIENT_ADDR}", pod_name(0))];
    let mut cluster: Vec<String> = (0..2)
        .map(|i| format!("{} from {NODE_ADDR}", remote_pod_name(i)))
        .collect();
    cluster.push(format!("{} from {NODE_ADDR}", pod_name(0)));
    for (port, allowed) in [(LOCAL_NODE_PORT, &local), (CLUSTER_NODE_PORT, &cluster)] {
        let mut cmd = env.bed.from_client(&env.probe);
        cmd.args(["--timeout-ms", "2000", "udp"])
            .arg(format!("{NODE_ADDR}:{port}"))
            .args(["--count", "20", "--size", SIZE]);
        let tally = tally(&mut cmd).unwrap();
        assert!(
            tally.errors.is_empty(),
            "NodePort {port}: {:?}\n{}",
            tally.errors,
            env.agent_log_text()
        );
        assert_eq!(tally.total(), 20, "NodePort {port}");
        for answer in tally.answers.keys() {
            assert!(
                allowed.contains(answer),
                "NodePort {port}: unexpected {answer:?} in {:?}",
                tally.answers
            );
        }
    }
    // Every request's later fragment found its first: none dropped; the
    // masqueraded answers' fragments (three each) were translated back.
    assert_eq!(env.reason_count("drop_frag_unseen").unwrap(), 0);
    let reversed = env.reason_count("reverse_snat").unwrap();
    assert!(reversed >= 3 * 20, "{reversed}");
}
