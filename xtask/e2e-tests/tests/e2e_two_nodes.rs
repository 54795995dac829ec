//! End-to-end on two nodes: the testbed's second node (node-b, its own
//! pods, routed like a flat pod network) next to the agent's node. Under
//! `externalTrafficPolicy: Local` an external client reaches only this
//! node's pods and they see the client's own address (kube-proxy's
//! TestExternalTrafficPolicyLocal "external to NodePort hits only local
//! endpoint, unmasqueraded"), with real TCP and UDP. Under policy Cluster
//! every new connection succeeds, to pods on both nodes, and the remote
//! pods see node-a's address (TestExternalTrafficPolicyCluster "external to
//! NodePort hits both endpoints", masqueraded), and so does the local pod
//! once the agent hooks the pods' bridge (`--pod-device`).

use std::fs;

use xtask::{
    demo_env::{Env, exclusive_env_on},
    manifests,
    testbed::{
        CLIENT_ADDR, NODE_ADDR, NODE_LINK_DEVICE, POD_BRIDGE, POD_TCP_PORT, POD_UDP_PORT, Testbed,
        pod_addr, pod_name, remote_pod_addr, remote_pod_name,
    },
    traffic::{Tally, tally},
};

const LOCAL_NODE_PORT: u16 = 30093;
const LOCAL_UDP_NODE_PORT: u16 = 30094;
const CLUSTER_NODE_PORT: u16 = 30095;
const CLUSTER_UDP_NODE_PORT: u16 = 30096;

/// The policy Cluster Service's LoadBalancer ingress IP and externalIP
/// (inside the range the client routes to the node).
const CLUSTER_LB_IP: &str = "192.0.2.132";
const CLUSTER_EXTERNAL_IP: &str = "192.0.2.232";

/// One LoadBalancer Service of policy Local with one endpoint on this node
/// and two on node-b, and the same of policy Cluster.
fn spread_local() -> String {
    spread(
        [
            "spread-local",
            "192.0.2.31",
            "Local",
            "192.0.2.131",
            "192.0.2.231",
        ],
        LOCAL_NODE_PORT,
        LOCAL_UDP_NODE_PORT,
    )
}

fn spread_cluster() -> String {
    spread(
        [
            "spread-cluster",
            "192.0.2.32",
            "Cluster",
            CLUSTER_LB_IP,
            CLUSTER_EXTERNAL_IP,
        ],
        CLUSTER_NODE_PORT,
        CLUSTER_UDP_NODE_PORT,
    )
}

/// `[name, clusterIP, externalTrafficPolicy, LoadBalancer IP, externalIP]`.
fn spread(
    [name, cluster_ip, policy, lb_ip, external_ip]: [&str; 5],
    tcp_port: u16,
    udp_port: u16,
) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  type: LoadBalancer
  clusterIP: {cluster_ip}
  externalIPs: [{external_ip}]
  externalTrafficPolicy: {policy}
  ports:
    - {{name: http, protocol: TCP, port: 80, targetPort: {POD_TCP_PORT}, nodePort: {tcp_port}}}
    - {{name: dns, protocol: UDP, port: 53, targetPort: {POD_UDP_PORT}, nodePort: {udp_port}}}
status:
  loadBalancer:
    ingress: [{{ip: {lb_ip}}}]
---
{}",
        manifests::two_node_slice(name, &manifests::pod_slice_ports()),
    )
}

fn write(dir: &std::path::Path) -> anyhow::Result<()> {
    manifests::write_demo(dir, &[0, 1, 2])?;
    fs::write(dir.join("spread-local.yaml"), spread_local())?;
    fs::write(dir.join("spread-cluster.yaml"), spread_cluster())?;
    Ok(())
}

/// 40 connections (TCP) or datagrams (UDP) from the external client to
/// `addr:port`, each answered within 2 s: the answers, by pod and source.
fn all_forty_answered(env: &Env, proto: &str, addr: &str, port: u16) -> Tally {
    let mut cmd = env.bed.from_client(&env.probe);
    cmd.args(["--timeout-ms", "2000", proto])
        .arg(format!("{addr}:{port}"))
        .args(["--count", "40"]);
    let tally = tally(&mut cmd).unwrap();
    assert!(
        tally.errors.is_empty(),
        "{proto} to {addr}:{port}: {:?}\n{}",
        tally.errors,
        env.agent_log_text()
    );
    assert_eq!(tally.total(), 40, "{proto} to {addr}:{port}");
    tally
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

/// The headline: under policy Cluster 22 of 40 connections failed
/// (every one sent to node-b). Masqueraded, all 40 succeed, TCP and UDP,
/// through the NodePort, the LoadBalancer IP and the externalIP
/// (TestInternalExternalMasquerade "external to NodePort", "external to
/// LB"; TestExternalTrafficPolicyCluster "external to external IP hits both
/// endpoints": masq true), and every pod sees node-a's address; the agent
/// attaches to the link toward node-b too, where node-b's replies come
/// back, and to the local pods' bridge, where theirs do.
#[test]
fn policy_cluster_reaches_pods_on_both_nodes_masqueraded() {
    let (_serial, env) = exclusive_env_on(
        || Testbed::with_remote_node(3, 2),
        write,
        &["--device", NODE_LINK_DEVICE, "--pod-device", POD_BRIDGE],
    );
    let node = NODE_ADDR.to_string();
    let frontends = [
        ("tcp", node.as_str(), CLUSTER_NODE_PORT),
        ("udp", node.as_str(), CLUSTER_UDP_NODE_PORT),
        ("tcp", CLUSTER_LB_IP, 80),
        ("udp", CLUSTER_LB_IP, 53),
        ("tcp", CLUSTER_EXTERNAL_IP, 80),
        ("udp", CLUSTER_EXTERNAL_IP, 53),
    ];
    for (proto, addr, port) in frontends {
        let tally = all_forty_answered(&env, proto, addr, port);
        let proto = format!("{proto} to {addr}:{port}");
        let remote: Vec<String> = (0..2)
            .map(|i| format!("{} from {NODE_ADDR}", remote_pod_name(i)))
            .collect();
        let local = format!("{} from {NODE_ADDR}", pod_name(0));
        for answer in tally.answers.keys() {
            assert!(
                remote.contains(answer) || *answer == local,
                "{proto}: unexpected {answer:?} in {:?}",
                tally.answers
            );
        }
        assert!(
            remote.iter().any(|r| tally.answers.contains_key(r))
                && tally.answers.contains_key(&local),
            "{proto}: pods of both nodes are chosen in 40 (all but certainly): {:?}",
            tally.answers
        );
    }
}

/// `lb trace` names the masquerade real traffic meets: for a few client
/// ports, the trace's backend, address and port rule (applied), then the
/// real request from that port lands on that pod, which sees the node's
/// address, and `lb conntrack list` shows the flow's translated source.
#[test]
fn the_trace_and_the_connection_table_show_the_masquerade() {
    let (_serial, env) = exclusive_env_on(
        || Testbed::with_remote_node(3, 2),
        write,
        &["--device", NODE_LINK_DEVICE, "--pod-device", POD_BRIDGE],
    );
    let lb = |args: &[&str]| -> serde_json::Value {
        let out = std::process::Command::new(&env.lb)
            .args(args)
            .args(["-o", "json", "--pin-dir"])
            .arg(&env.bed.pin_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "lb {args:?}: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let frontend = format!("{NODE_ADDR}:{CLUSTER_NODE_PORT}");
    let pod_of = |backend: &str| {
        let addr: std::net::Ipv4Addr = backend.split(':').next().unwrap().parse().unwrap();
        (0..3)
            .find(|&i| pod_addr(i) == addr)
            .map(pod_name)
            .or_else(|| {
                (0..2)
                    .find(|&i| remote_pod_addr(i) == addr)
                    .map(remote_pod_name)
            })
            .unwrap_or_else(|| panic!("{backend} is no pod"))
    };
    for port in 42_000..42_006u16 {
        let src = format!("{CLIENT_ADDR}:{port}");
        let report = lb(&[
            "trace", "--from", "external", "--src", &src, "--dst", &frontend,
        ]);
        let masquerade = &report["masquerade"];
        assert_eq!(report["verdict"], "dnat", "{report:#}");
        assert_eq!(report["snat"], true, "{report:#}");
        assert_eq!(
            masquerade["rule"],
            "external traffic, policy Cluster: masquerade"
        );
        assert_eq!(masquerade["address"], NODE_ADDR.to_string());
        let traced_port = masquerade["port"].as_u64().unwrap();
        assert!((61_000..=65_535).contains(&traced_port), "{report:#}");
        let backend = report["backend"].as_str().unwrap();

        let mut cmd = env.bed.from_client(&env.probe);
        cmd.args(["--timeout-ms", "2000", "tcp", &frontend])
            .args(["--source-port", &port.to_string()]);
        let answer = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
        assert_eq!(
            answer.trim(),
            format!("{} from {NODE_ADDR}", pod_of(backend)),
            "from port {port}: the trace said {backend}"
        );
        let conns = lb(&["conntrack", "list", "--port", &port.to_string()]);
        let conn = &conns.as_array().unwrap()[0];
        assert_eq!(conn["backend"], backend);
        let source = conn["translated_source"].as_str().unwrap();
        let (addr, snat_port) = source.split_once(':').unwrap();
        assert_eq!(addr, NODE_ADDR.to_string());
        assert!((61_000..=65_535).contains(&snat_port.parse::<u32>().unwrap()));
    }
}

/// Forwarding in XDP (`--xdp-forward`): the same 40 connections of policy
/// Cluster, TCP and UDP through the NodePort, all answered; the packets
/// toward node-b's pods leave from XDP by the link to node-b (a redirect),
/// and node-b's replies, translated back, leave from XDP toward the
/// client; the local pod's packets take the stack (its bridge runs no lb
/// XDP). kube-proxy's behaviour is unchanged (the same masquerade,
/// TestExternalTrafficPolicyCluster); only the kernel's forwarding path is
/// skipped.
#[test]
fn policy_cluster_is_forwarded_from_xdp_by_the_external_devices() {
    let (_serial, env) = exclusive_env_on(
        || Testbed::with_remote_node(3, 2),
        write,
        &[
            "--device",
            NODE_LINK_DEVICE,
            "--pod-device",
            POD_BRIDGE,
            "--xdp-forward",
        ],
    );
    let forwarded = || -> std::collections::BTreeMap<String, u64> {
        let out = std::process::Command::new(&env.lb)
            .args(["stats", "-o", "json", "--pin-dir"])
            .arg(&env.bed.pin_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "lb stats: {out:?}");
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        stats["forwarded"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["reason"].as_str().unwrap().to_string(),
                    r["count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let before = forwarded();
    let node = NODE_ADDR.to_string();
    for (proto, port) in [("tcp", CLUSTER_NODE_PORT), ("udp", CLUSTER_UDP_NODE_PORT)] {
        let tally = all_forty_answered(&env, proto, &node, port);
        let remote_answers: u32 = (0..2)
            .map(|i| format!("{} from {NODE_ADDR}", remote_pod_name(i)))
            .filter_map(|r| tally.answers.get(&r))
            .sum();
        assert!(remote_answers > 0, "{proto}: {:?}", tally.answers);
    }
    let after = forwarded();
    let grew = |outcome: &str| after[outcome] - before.get(outcome).copied().unwrap_or(0);
    // Requests to node-b's pods and node-b's replies: both cross devices.
    assert!(
        grew("xdp_redirect") >= 4,
        "forwarded from XDP: {after:?}\n{}",
        env.agent_log_text()
    );
    assert!(
        grew("stack_other_device") > 0,
        "the local pod's packets take the stack: {after:?}"
    );
}

/// `--pod-device auto`: the agent finds the local pods' device (the
/// bridge) by its route to their endpoints and hooks it, so the local pod
/// is masqueraded too (TestExternalTrafficPolicyCluster: "external to
/// NodePort hits both endpoints", masqueraded whatever the endpoint),
/// without the device being named.
#[test]
fn pod_device_auto_finds_the_local_pods_bridge() {
    let (_serial, env) = exclusive_env_on(
        || Testbed::with_remote_node(3, 2),
        write,
        &["--device", NODE_LINK_DEVICE, "--pod-device", "auto"],
    );
    let local = format!("{} from {NODE_ADDR}", pod_name(0));
    let node = NODE_ADDR.to_string();
    for (proto, port) in [("tcp", CLUSTER_NODE_PORT), ("udp", CLUSTER_UDP_NODE_PORT)] {
        let tally = all_forty_answered(&env, proto, &node, port);
        assert!(
            tally.answers.contains_key(&local),
            "{proto}: the local pod answers, seeing the node's address: {:?}\n{}",
            tally.answers,
            env.agent_log_text()
        );
        assert!(
            !tally
                .answers
                .keys()
                .any(|a| a.ends_with(&CLIENT_ADDR.to_string())),
            "{proto}: nobody sees the client: {:?}",
            tally.answers
        );
    }
    let log = env.agent_log_text();
    assert!(
        log.contains("pod hook attached") && log.contains(POD_BRIDGE),
        "the bridge was found and hooked:\n{log}"
    );
}
