//! End-to-end: the real agent on the demo manifests, in a namespace
//! topology (external client, node, three pods), with real TCP and UDP.
//! Needs root, as CI has. Every wait is bounded; the testbed removes
//! namespaces, cgroup, pins and processes even when a test fails.

use xtask::demo::{Chat, FRONTENDS, Frontend, Origin, exclusive_env as env};

fn frontend(label_part: &str) -> Frontend {
    *FRONTENDS
        .iter()
        .find(|f| f.label.contains(label_part))
        .expect("known frontend")
}

#[test]
fn every_frontend_type_reaches_every_backend() {
    let (_serial, env) = env();
    for frontend in FRONTENDS {
        let tally = env.request(frontend, 30).unwrap();
        assert!(
            tally.errors.is_empty(),
            "{} {}: {:?}",
            frontend.label,
            frontend.addr,
            tally.errors
        );
        assert_eq!(
            tally.pods_reached(),
            3,
            "{} {} reached only {:?}\n{}",
            frontend.label,
            frontend.addr,
            tally.answers,
            env.agent_log_text()
        );
    }
}

#[test]
fn established_flows_keep_their_backend_while_the_backend_set_changes() {
    let (_serial, mut env) = env();
    let nodeport = frontend("web-nodeport:http");
    let clusterip = frontend("web:http");
    let mut external = Chat::open(&mut env, Origin::Client, nodeport.addr);
    let mut internal = Chat::open(&mut env, Origin::Pod(0), clusterip.addr);
    // getpeername() shows the frontend, not the backend it was rewritten to.
    assert_eq!(external.peer, nodeport.addr);
    assert_eq!(internal.peer, clusterip.addr);
    let external_pod = external.ask();
    let internal_pod = internal.ask();
    assert!(external_pod.starts_with("pod-"), "{external_pod}");

    // The external flow's own pod starts terminating (serving, not ready:
    // a pod draining): new connections avoid it, the established one keeps
    // working both ways ("terminating backends keep their established
    // flows until they are removed", issue 11).
    let index = pod_index(&external_pod);
    let remaining: Vec<usize> = (0..3).filter(|i| *i != index).collect();
    env.set_endpoints_draining_applied(&remaining, &[index])
        .unwrap();
    for _ in 0..5 {
        assert_eq!(external.ask(), external_pod);
        assert_eq!(internal.ask(), internal_pod);
    }
    let fresh = env.request(&nodeport, 30).unwrap();
    assert!(fresh.errors.is_empty(), "{:?}", fresh.errors);
    assert!(
        !fresh.answers.contains_key(&external_pod),
        "{:?}",
        fresh.answers
    );
}

/// "pod-N" -> N - 1.
fn pod_index(pod: &str) -> usize {
    pod.trim_start_matches("pod-").parse::<usize>().unwrap() - 1
}

/// Issue 11: "a hit whose backend is gone ... dropped or reset for the
/// rest, never sent to an address that may now be someone else's pod". A
/// long-lived connection through the NodePort whose pod is removed from
/// the EndpointSlices gets nothing more to that pod once the removal is
/// applied (lb-probe bounds the exchange: an `error:` answer, no pod's
/// name), while a connection to a pod that turns terminating instead
/// keeps answering.
#[test]
fn a_connection_to_a_removed_endpoint_gets_nothing_more_while_a_draining_one_keeps_working() {
    let (_serial, mut env) = env();
    let nodeport = frontend("web-nodeport:http");
    // Two connections on two different pods.
    let mut first = Chat::open(&mut env, Origin::Client, nodeport.addr);
    let first_pod = first.ask();
    let mut second = (0..20)
        .map(|_| {
            let mut chat = Chat::open(&mut env, Origin::Client, nodeport.addr);
            let pod = chat.ask();
            (chat, pod)
        })
        .find(|(_, pod)| *pod != first_pod)
        .expect("a connection on another pod within 20");
    let (removed, draining) = (pod_index(&first_pod), pod_index(&second.1));
    let ready: Vec<usize> = (0..3)
        .filter(|i| ![removed, draining].contains(i))
        .collect();
    env.set_endpoints_draining_applied(&ready, &[draining])
        .unwrap();
    for _ in 0..3 {
        assert_eq!(second.0.ask(), second.1, "the draining pod's connection");
        let answer = first.ask();
        assert!(
            answer.starts_with("error"),
            "the removed pod {first_pod} answered {answer:?}\n{}",
            env.agent_log_text()
        );
    }
}

#[test]
fn a_removed_endpoint_gets_no_new_connections_once_applied() {
    let (_serial, env) = env();
    env.set_endpoints_applied(&[0, 1]).unwrap();
    for frontend in FRONTENDS {
        let tally = env.request(frontend, 30).unwrap();
        assert!(
            tally.errors.is_empty(),
            "{}: {:?}",
            frontend.label,
            tally.errors
        );
        assert!(
            !tally.answers.contains_key("pod-3"),
            "{}: {:?}",
            frontend.label,
            tally.answers
        );
        assert_eq!(
            tally.pods_reached(),
            2,
            "{}: {:?}",
            frontend.label,
            tally.answers
        );
    }
    // And back: the endpoint returns.
    env.set_endpoints_applied(&[0, 1, 2]).unwrap();
    let tally = env.request(&frontend("web-nodeport:http"), 30).unwrap();
    assert!(tally.answers.contains_key("pod-3"), "{:?}", tally.answers);
}

#[test]
fn killing_the_agent_and_starting_it_again_keeps_open_connections() {
    let (_serial, mut env) = env();
    let mut external = Chat::open(&mut env, Origin::Client, frontend("web-nodeport:http").addr);
    let mut internal = Chat::open(&mut env, Origin::Pod(0), frontend("web:http").addr);
    let (external_pod, internal_pod) = (external.ask(), internal.ask());

    env.kill_agent().unwrap();
    // The pinned datapath serves on with no agent at all.
    assert_eq!(external.ask(), external_pod);
    assert_eq!(internal.ask(), internal_pod);
    let unattended = env.request(&frontend("web-lb:http"), 10).unwrap();
    assert!(unattended.errors.is_empty(), "{:?}", unattended.errors);

    env.start_agent().unwrap();
    for _ in 0..5 {
        assert_eq!(external.ask(), external_pod);
        assert_eq!(internal.ask(), internal_pod);
    }
    for frontend in FRONTENDS {
        let tally = env.request(frontend, 20).unwrap();
        assert!(
            tally.errors.is_empty(),
            "{} after restart: {:?}",
            frontend.label,
            tally.errors
        );
    }
}
