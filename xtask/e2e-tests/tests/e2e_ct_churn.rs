//! End-to-end: long-lived TCP connections through a NodePort survive 30 s
//! of endpoint churn (the EndpointSlices rewritten four times a second,
//! every subset of the pods in turn, their own pod often out of the
//! Service) with zero resets and every answer from their own pod, as
//! kube-proxy's conntrack keeps established connections to removed
//! endpoints; and once the churn settles, new connections never reach an
//! endpoint that is out.

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
        env.set_endpoints(subsets[rewrites % subsets.len()])
            .unwrap();
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

    // Settled on pods 1 and 2: new connections never reach pod-3.
    env.set_endpoints_applied(&[0, 1]).unwrap();
    let tally = env.request(nodeport, 30).unwrap();
    assert!(tally.errors.is_empty(), "{:?}", tally.errors);
    assert!(!tally.answers.contains_key("pod-3"), "{:?}", tally.answers);
    for (chat, pod) in &mut chats {
        assert_eq!(&chat.ask(), pod);
    }
}
