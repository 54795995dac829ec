//! End-to-end, for the DaemonSet: the agent runs with exactly the
//! capabilities `deploy/daemonset.yaml` gives its container (a bounding set
//! of those and nothing else, as the container runtime sets it for a
//! root process), from a fresh start and from its pins after a restart,
//! keeping a connection across the restart, and the operator commands work
//! with them too; each of those capabilities is needed; `lb cleanup` needs
//! none. Same topology and rules as `e2e.rs` (root, bounded waits, full
//! cleanup).

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use xtask::{
    demo::{Chat, Env, FRONTENDS, Origin, exclusive_env},
    deploy_check::agent_capabilities,
    testbed::CLIENT_ADDR,
};

const NODEPORT: &str = "198.51.100.1:30080";

/// What the DaemonSet adds (`BPF`, `NET_ADMIN`, `PERFMON` for the
/// datapath, `SYS_PTRACE` and `SYS_ADMIN` for aborting pods' UDP sockets).
fn daemonset_capabilities() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/daemonset.yaml");
    agent_capabilities(&fs::read_to_string(path).unwrap()).unwrap()
}

/// A wrapper that runs `lb` with only `caps` in its bounding set (so, as
/// uid 0, with only those), in place of `env.lb`.
fn capped_lb(env: &Env, real_lb: &Path, name: &str, caps: &[String]) -> PathBuf {
    let set: Vec<String> = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{}", c.to_lowercase())))
        .collect();
    let script = format!(
        "#!/bin/sh\nexec setpriv --bounding-set {} --inh-caps -all -- {} \"$@\"\n",
        set.join(","),
        real_lb.display()
    );
    let path = env.workdir.join(name);
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Stops the agent the environment started (with every capability) and
/// removes its pins, so the next agent starts from nothing.
fn fresh(env: &mut Env) -> PathBuf {
    let real_lb = env.lb.clone();
    env.kill_agent().unwrap();
    let out = Command::new(&real_lb)
        .arg("cleanup")
        .arg("--pin-dir")
        .arg(&env.bed.pin_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!env.bed.pin_dir.exists());
    // Unpinned, the old programs are detached only once the kernel frees
    // their links (after an RCU grace period, from a workqueue): until
    // then they still translate, and an agent that cannot load anything
    // would seem to serve. Wait until the NodePort answers no more.
    let deadline = Instant::now() + Duration::from_secs(10);
    while env
        .request(&FRONTENDS[2], 1)
        .is_ok_and(|t| t.errors.is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "the unpinned datapath still answers after 10 s"
        );
        thread::sleep(Duration::from_millis(50));
    }
    real_lb
}

/// The agent log's device attachment lines, oldest first.
fn attachments(env: &Env) -> Vec<String> {
    env.agent_log_text()
        .lines()
        .filter(|l| l.contains("attached to device"))
        .map(str::to_owned)
        .collect()
}

fn json(lb: &Path, args: &[&str]) -> Value {
    let out = Command::new(lb)
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lb {args:?} with the DaemonSet's capabilities: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("lb {args:?} printed no JSON ({e})"))
}

#[test]
fn the_agent_serves_with_only_the_daemonsets_capabilities_fresh_and_after_a_restart() {
    let caps = daemonset_capabilities();
    let (_serial, mut env) = exclusive_env();
    let real_lb = fresh(&mut env);
    env.lb = capped_lb(&env, &real_lb, "lb-daemonset-caps", &caps);
    env.start_agent()
        .unwrap_or_else(|e| panic!("with {caps:?} only, from no pins: {e:#}"));
    for frontend in FRONTENDS {
        let tally = env.request(frontend, 10).unwrap();
        assert!(
            tally.errors.is_empty(),
            "{} {}: {:?}",
            frontend.label,
            frontend.addr,
            tally.errors
        );
    }

    // A rolling update: the agent stops, a new one starts on the pins.
    let mut held = Chat::open(&mut env, Origin::Client, NODEPORT);
    let pod = held.ask();
    assert!(pod.starts_with("pod-"), "{pod}");
    let attached = attachments(&env).len();
    env.kill_agent().unwrap();
    // The pinned datapath answers while no agent runs, so start_agent's
    // readiness check passes at once: wait for the new agent's own line.
    env.start_agent()
        .unwrap_or_else(|e| panic!("with {caps:?} only, onto its pins: {e:#}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while attachments(&env).len() == attached {
        assert!(
            Instant::now() < deadline,
            "the restarted agent never attached:\n{}",
            env.agent_log_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let last = attachments(&env).pop().unwrap();
    assert!(
        last.contains("xdp=Replaced") && last.contains("tc_egress=Replaced"),
        "the restarted agent did not swap its programs into the pinned links: {last}"
    );
    assert_eq!(
        held.ask(),
        pod,
        "the held connection moved or broke across the restart"
    );

    // `kubectl exec ds/lb -- lb ...` runs with the container's capabilities.
    let pin_dir = env.bed.pin_dir.to_str().unwrap().to_owned();
    let services = json(&env.lb, &["service", "list", "--pin-dir", &pin_dir]);
    assert!(
        services.as_array().is_some_and(|s| !s.is_empty()),
        "{services}"
    );
    json(&env.lb, &["stats", "--pin-dir", &pin_dir]);
    let src = format!("{CLIENT_ADDR}:41000");
    let trace = json(
        &env.lb,
        &[
            "trace",
            "--pin-dir",
            &pin_dir,
            "--src",
            &src,
            "--dst",
            NODEPORT,
        ],
    );
    assert_eq!(trace["verdict"], "dnat", "{trace}");
    let state_dir = env.state_dir().to_str().unwrap().to_owned();
    let status = json(&env.lb, &["status", "--state-dir", &state_dir]);
    assert!(status.is_object(), "{status}");
}

/// The capabilities that only aborting a pod's connected UDP socket needs
/// (entering the pod's network namespace); without them the agent serves.
const FOR_POD_SOCKETS: [&str; 2] = ["SYS_PTRACE", "SYS_ADMIN"];

/// A pod's connected UDP client to the ClusterIP, then its backend removed
/// from the Service: whether the agent aborted the socket (the client
/// connected again, to another pod). The endpoints are restored after.
fn pod_socket_aborted_when_its_backend_leaves(env: &Env) -> bool {
    let mut chat = Chat::open_udp(env, Origin::Pod(0), "192.0.2.10:53");
    let mut ask = || chat.ask();
    let pod = ask();
    assert!(pod.starts_with("pod-"), "{pod}");
    let index: usize = pod.trim_start_matches("pod-").parse::<usize>().unwrap() - 1;
    let remaining: Vec<usize> = (0..3).filter(|i| *i != index).collect();
    env.set_endpoints(&remaining).unwrap();
    thread::sleep(Duration::from_secs(2));
    let answer = ask();
    drop(chat);
    env.set_endpoints_applied(&[0, 1, 2]).unwrap();
    answer.starts_with("reconnected ")
}

#[test]
fn each_daemonset_capability_is_needed_and_cleanup_needs_none() {
    let caps = daemonset_capabilities();
    let (_serial, mut env) = exclusive_env();
    let real_lb = fresh(&mut env);
    // Each of the datapath's is needed by the datapath (from no pins: a
    // failed start leaves none), checked without the pod-socket ones (CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON).
    let datapath: Vec<String> = caps
        .iter()
        .filter(|c| !FOR_POD_SOCKETS.contains(&c.as_str()))
        .cloned()
        .collect();
    for missing in &datapath {
        let fewer: Vec<String> = datapath.iter().filter(|c| *c != missing).cloned().collect();
        env.lb = capped_lb(&env, &real_lb, &format!("lb-without-{missing}"), &fewer);
        let outcome = env.start_agent();
        let log = env.agent_log_text();
        env.kill_agent().unwrap();
        let err = match outcome {
            Ok(()) => panic!("the agent ran without CAP_{missing}: the DaemonSet need not add it"),
            Err(err) => format!("{err:#}"),
        };
        assert!(
            err.contains("lb agent exited"),
            "without CAP_{missing}: {err}"
        );
        assert!(
            log.contains("not permitted") || log.contains("Permission denied"),
            "without CAP_{missing} the agent failed for another reason:\n{log}"
        );
    }
    // Each of the pod-socket capabilities is needed for that alone.
    for missing in FOR_POD_SOCKETS {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        env.lb = capped_lb(&env, &real_lb, &format!("lb-without-{missing}"), &fewer);
        env.start_agent()
            .unwrap_or_else(|e| panic!("without CAP_{missing} the agent must serve: {e:#}"));
        let aborted = pod_socket_aborted_when_its_backend_leaves(&env);
        let log = env.agent_log_text();
        env.kill_agent().unwrap();
        assert!(
            !aborted,
            "a pod's UDP socket was aborted without CAP_{missing}: the DaemonSet need not add it"
        );
        assert!(
            log.contains("not aborted in some network namespaces"),
            "without CAP_{missing} the agent did not say what it could not abort:\n{log}"
        );
    }
    // With all of them it starts (the failures above were the capability's)
    // and aborts the pod's socket.
    env.lb = capped_lb(&env, &real_lb, "lb-daemonset-caps", &caps);
    env.start_agent().unwrap();
    let aborted = pod_socket_aborted_when_its_backend_leaves(&env);
    let log = env.agent_log_text();
    env.kill_agent().unwrap();
    assert!(
        aborted,
        "with the DaemonSet's capabilities a pod's UDP socket was not aborted:\n{log}"
    );

    // Rolling back: `lb cleanup` with no capability at all detaches it.
    let nocaps = capped_lb(&env, &real_lb, "lb-no-caps", &[]);
    let out = Command::new(&nocaps)
        .arg("cleanup")
        .arg("--pin-dir")
        .arg(&env.bed.pin_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lb cleanup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!env.bed.pin_dir.exists(), "pins left behind");
    let nodeport = FRONTENDS
        .iter()
        .find(|f| f.addr == NODEPORT && !f.udp)
        .unwrap();
    let tally = env.request(nodeport, 1).unwrap();
    assert!(
        !tally.errors.is_empty(),
        "the NodePort still answers after lb cleanup: the datapath stayed attached"
    );
}
