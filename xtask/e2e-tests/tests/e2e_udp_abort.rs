//! End-to-end: a connected UDP client (statsd, syslog, QUIC keep one
//! socket) to a ClusterIP moves to a new backend after its backend is
//! removed. The socket hooks rewrote its connect() to a backend, which the
//! kernel keeps as its peer; kube-proxy's UDP conntrack cleanup
//! (pkg/proxy/conntrack/cleanup.go) has no such socket to clean, so lb
//! aborts it (SOCK_DESTROY) when it purges the backend, and the client
//! connects again.

use std::{thread, time::Duration};

use xtask::demo::{Chat, Origin, exclusive_env};

#[test]
fn a_connected_udp_client_moves_to_a_new_backend_after_its_backend_is_removed() {
    let (_serial, env) = exclusive_env();
    let mut chat = Chat::open_udp(&env, Origin::Pod(0), "192.0.2.10:53");
    // The probe prints its peer first: the frontend (getpeername).
    assert_eq!(chat.peer, "192.0.2.10:53");
    let mut ask = || chat.ask();
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
}
