//! End-to-end (issue 11: "long-lived TCP connections survive 30 s of
//! endpoint churn (several EndpointSlice rewrites per second) with zero
//! resets while new connections never reach a removed endpoint after the
//! change is applied"): the EndpointSlices rewritten four times a second,
//! every subset of the pods ready in turn and the others draining (serving
//! and terminating, as pods of a rolling update), their own pod often out
//! of the chosen set; zero resets and every answer from their own pod, as
//! kube-proxy's conntrack keeps established connections to terminating
//! endpoints. Once the churn settles with a pod removed, new connections
//! never reach it, and the connections to the others carry on.

use std::{
    thread,
    time::{Duration, Instant},
};

use xtask::demo::{Chat, FRONTENDS, Origin, exclusive_env};

const CHURN: Duration = Duration::from_secs(30);
const REWRITE_EVERY: Duration = Duration::from_millis(250);

#[test]
fn long_lived_connections_survive_endpoint_churn_with_zero_resets() {
    let (_serial, mut env) = exclusive_env();
    let nodeport = FRONTENDS
        .iter()
        .find(|f| f.label.contains("web-nodeport:http"))
        .expect("the demo's NodePort");
    let mut chats: Vec<(Chat, String)> = (0..4)
        .map(|_| {
            let mut chat = Chat::open(&mut env, Origin::Client, nodeport.addr);
            let pod = chat.ask();
            assert!(pod.starts_with("pod-"), "{pod}");
            (chat, pod)
        })
        .collect();

    let subsets: [&[usize]; 7] = [&[0, 1], &[1, 2], &[0, 2], &[0], &[1], &[2], &[0, 1, 2]];
    let started = Instant::now();
    let (mut rewrites, mut answers) = (0, 0);
    while started.elapsed() < CHURN {
        let ready = subsets[rewrites % subsets.len()];
        let draining: Vec<usize> = (0..3).filter(|i| !ready.contains(i)).collect();
        env.set_endpoints_draining(ready, &draining).unwrap();
        rewrites += 1;
        for (chat, pod) in &mut chats {
            let answer = chat.ask();
            assert_eq!(
                &answer,
                pod,
                "after {rewrites} rewrites ({:?} in)\n{}",
                started.elapsed(),
                env.agent_log_text()
            );
            answers += 1;
        }
        thread::sleep(REWRITE_EVERY);
    }
    eprintln!("churn: {rewrites} rewrites, {answers} answers, no reset");

    // Settled on pods 1 and 2, pod-3 removed: new connections never reach
    // it; the connections to the others carry on (pod-3's: e2e.rs).
    env.set_endpoints_applied(&[0, 1]).unwrap();
    let tally = env.request(nodeport, 30).unwrap();
    assert!(tally.errors.is_empty(), "{:?}", tally.errors);
    assert!(!tally.answers.contains_key("pod-3"), "{:?}", tally.answers);
    for (chat, pod) in chats.iter_mut().filter(|(_, pod)| pod != "pod-3") {
        assert_eq!(&chat.ask(), pod);
    }
}
