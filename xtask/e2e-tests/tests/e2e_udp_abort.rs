//! End-to-end: a connected UDP client (statsd, syslog, QUIC keep one
//! socket) to a ClusterIP moves to a new backend after its backend is
//! removed. The socket hooks rewrote its connect() to a backend, which the
//! kernel keeps as its peer; kube-proxy's UDP conntrack cleanup
//! (pkg/proxy/conntrack/cleanup.go) has no such socket to clean, so lb
//! aborts it (SOCK_DESTROY) when it purges the backend, and the client
//! connects again.

use std::{
    io::{BufRead, BufReader, Write},
    process::Stdio,
    thread,
    time::Duration,
};

use xtask::demo::{Origin, exclusive_env};

#[test]
fn a_connected_udp_client_moves_to_a_new_backend_after_its_backend_is_removed() {
    let (_serial, env) = exclusive_env();
    let mut cmd = env.probe_from(Origin::Pod(0));
    cmd.args(["udp-chat", "192.0.2.10:53"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("lb-probe udp-chat");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // The probe prints its peer first: the frontend (getpeername).
    let mut peer = String::new();
    stdout.read_line(&mut peer).unwrap();
    assert!(peer.starts_with("peer 192.0.2.10:53"), "{peer}");
    let mut ask = || {
        writeln!(stdin, "ping").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    };
    let pod = ask();
    assert!(pod.starts_with("pod-"), "{pod}");
    assert_eq!(ask(), pod, "a connected socket keeps its backend");

    let index: usize = pod.trim_start_matches("pod-").parse::<usize>().unwrap() - 1;
    let remaining: Vec<usize> = (0..3).filter(|i| *i != index).collect();
    env.set_endpoints(&remaining).unwrap();
    thread::sleep(Duration::from_secs(2));

    let answer = ask();
    let moved = answer.strip_prefix("reconnected ").unwrap_or_else(|| {
        panic!(
            "the socket was not aborted: {answer}\n{}",
            env.agent_log_text()
        )
    });
    assert!(
        moved.starts_with("pod-") && moved != pod,
        "{moved} after {pod}"
    );
    assert_eq!(ask(), moved, "the new socket keeps its new backend");
    let _ = child.kill();
    let _ = child.wait();
}
