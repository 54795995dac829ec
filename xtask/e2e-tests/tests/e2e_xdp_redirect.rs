//! End-to-end: `--xdp-forward` to pods on routed veths (as Calico and
//! Cilium wire them). The agent names the pods' veths whose pod ends run
//! NAPI (the kernel's `xdp_features`), and translated frames to those pods
//! leave from XDP straight into the pod, past the node's forwarding path;
//! real TCP connections and UDP exchanges to the NodePort all succeed.
//! When a pod's end stops running NAPI (GRO off), the kernel announces it,
//! the agent takes that veth out at once, and the pod is reached by the
//! stack again without a lost request.

use std::{collections::BTreeSet, process::Command, thread, time::Duration, time::Instant};

use lb::datapath::KernelMaps;
use lb_bench::throughput_nodes::ifindex;
use xtask::{
    demo_env::{Env, exclusive_env_on},
    manifests,
    testbed::{NODE_ADDR, Testbed},
    traffic::tally,
};

const TCP_NODE_PORT: u16 = 30080;
const UDP_NODE_PORT: u16 = 30053;

fn pod_veths(env: &Env) -> BTreeSet<u32> {
    (1..=3)
        .map(|i| ifindex(&env.bed.node_ns(), &format!("veth{i}")).unwrap())
        .collect()
}

fn targets(env: &Env) -> BTreeSet<u32> {
    KernelMaps::open_pinned(&env.bed.pin_dir)
        .expect("the agent's pinned maps")
        .xdp_targets()
        .unwrap()
}

/// Polls (bounded) until the agent's redirect targets are `want`.
fn await_targets(env: &Env, want: &BTreeSet<u32>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = targets(env);
        if now == *want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the redirect targets stayed {now:?}, not {want:?}\n{}",
            env.agent_log_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn forwarded(env: &Env, outcome: &str) -> u64 {
    let out = Command::new(&env.lb)
        .args(["stats", "-o", "json", "--pin-dir"])
        .arg(&env.bed.pin_dir)
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    stats["forwarded"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["reason"] == outcome)
        .and_then(|row| row["count"].as_u64())
        .unwrap_or(0)
}

/// 40 TCP connections and 40 UDP exchanges from the client to the
/// NodePorts, every one answered.
fn all_answered(env: &Env) {
    for (proto, port) in [("tcp", TCP_NODE_PORT), ("udp", UDP_NODE_PORT)] {
        let mut cmd = env.bed.from_client(&env.probe);
        cmd.args(["--timeout-ms", "2000", proto])
            .arg(format!("{NODE_ADDR}:{port}"))
            .args(["--count", "40"]);
        let tally = tally(&mut cmd).unwrap();
        assert!(
            tally.errors.is_empty() && tally.total() == 40,
            "{proto}: {:?} of {}\n{}",
            tally.errors,
            tally.total(),
            env.agent_log_text()
        );
    }
}

#[test]
fn translated_frames_enter_routed_pods_from_xdp_and_a_pod_without_napi_gets_them_by_the_stack() {
    let (_serial, env) = exclusive_env_on(
        || Testbed::routed(3),
        |dir| manifests::write_demo(dir, &[0, 1, 2]),
        &["--xdp-forward"],
    );
    let veths = pod_veths(&env);
    await_targets(&env, &veths);

    let redirected = forwarded(&env, "xdp_redirect");
    all_answered(&env);
    // Every client-to-pod packet of 40 connections and 40 datagrams left
    // from XDP (the replies come back by the stack and tc egress).
    assert!(
        forwarded(&env, "xdp_redirect") >= redirected + 40 * 3 + 40,
        "{} redirected",
        forwarded(&env, "xdp_redirect") - redirected
    );

    // GRO off at pod-1's end: its veth no longer takes redirected frames,
    // and the kernel's notification takes it out of the targets.
    let pod1 = env.bed.pod_ns(0);
    xtask::testbed::run(Command::new("ip").args([
        "netns", "exec", &pod1, "ethtool", "-K", "eth0", "gro", "off",
    ]))
    .unwrap();
    let veth1 = ifindex(&env.bed.node_ns(), "veth1").unwrap();
    let rest: BTreeSet<u32> = veths.iter().copied().filter(|&v| v != veth1).collect();
    await_targets(&env, &rest);
    let by_stack = forwarded(&env, "stack_other_device");
    all_answered(&env);
    assert!(
        forwarded(&env, "stack_other_device") > by_stack,
        "pod-1 is reached by the stack now"
    );
}
