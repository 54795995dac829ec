//! kube-proxy's health and metrics endpoints on the real agent in cluster
//! mode, against a real API server: `/healthz` follows the Node's
//! eligibility, and `/metrics` carries kube-proxy's names, with the
//! network-programming latency measured from the EndpointSlice's
//! trigger-time annotation. Root; every wait bounded.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Result;
use kube::api::{Patch, PatchParams};
use lb_watch_tests::{
    EXCLUSIVE,
    agent::Agent,
    assert_root, http_get,
    objects::{Cluster, NODE, pods, service, slice},
    wait_for,
};
use serde_json::json;
use xtask::{apiserver::ApiServer, scrape::metric as sample};

const WITHIN: Duration = Duration::from_secs(20);
const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Waits until `path` answers `status` with a body containing `needle`.
async fn answers(agent: &mut Agent, path: &str, status: u16, needle: &str) -> Result<String> {
    let address = agent.healthz;
    let what = format!("{path} to answer {status} with {needle:?}");
    let result = wait_for(&what, WITHIN, || {
        agent.check_running()?;
        Ok(match http_get(address, path)? {
            Some((code, body)) if code == status && body.contains(needle) => Ok(body),
            other => Err(other),
        })
    })
    .await;
    result.map_err(|err| err.context(format!("agent log:\n{}", agent.log())))
}

/// Upstream's proxier_health.go (`nodeEligible`, from NodeManager's
/// rule): a Node marked `ToBeDeletedByClusterAutoscaler` makes `/healthz`
/// 503 so load balancers drain it, while `/livez` stays 200; removing the
/// taint makes it healthy again. And pkg/proxy/metrics: the sync histogram,
/// the last-sync timestamp and the network-programming histogram (observed
/// from the slice's trigger time to the map write) are served.
#[tokio::test]
async fn healthz_follows_the_nodes_eligibility_and_metrics_carry_kube_proxys_names() -> Result<()> {
    let _serial = EXCLUSIVE.lock().await;
    assert_root();
    xtask::apiserver::build()?;
    let server = ApiServer::start()?;
    let cluster = Cluster::new(server.client()?);
    cluster.create_node().await?;
    cluster
        .create_service(&service("web", "10.96.0.10", 80, json!({})))
        .await?;
    let mut agent = Agent::start(&server.kubeconfig(), &[])?;
    answers(&mut agent, "/healthz", 200, r#""nodeEligible": true"#).await?;
    // The endpoint-slice controller's trigger time, taken after the agent
    // started (upstream ignores trigger times from before its start).
    let mut web = slice("web-1", "web", &pods(1, 2));
    // RFC 3339 with nanoseconds, as the controller writes it.
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    web.metadata.annotations = Some(BTreeMap::from([(TRIGGER_TIME.to_owned(), now)]));
    cluster.create_slice(&web).await?;
    let metrics = agent.metrics;
    let text = wait_for("a network-programming sample", WITHIN, || {
        let text = http_get(metrics, "/metrics")?.map(|(_, body)| body);
        let count = text
            .as_deref()
            .and_then(|t| sample(t, "kubeproxy_network_programming_duration_seconds_count"));
        Ok(match (count, text) {
            (Some(n), Some(text)) if n >= 1.0 => Ok(text),
            (count, _) => Err(count),
        })
    })
    .await?;
    for name in [
        "kubeproxy_sync_proxy_rules_duration_seconds_count",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
    ] {
        let value = sample(&text, name);
        assert!(value.is_some_and(|v| v > 0.0), "{name}: {value:?}\n{text}");
    }
    // Measured from the trigger time to the map write: positive, and
    // shorter than the test so far.
    let sum = sample(&text, "kubeproxy_network_programming_duration_seconds_sum");
    assert!(sum.is_some_and(|s| s > 0.0 && s < 60.0), "{sum:?}");
    assert!(text.contains("lb_map_capacity{"), "{text}");

    let taint = json!({"spec": {"taints": [
        {"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}
    ]}});
    cluster
        .nodes
        .patch(NODE, &PatchParams::default(), &Patch::Merge(taint))
        .await?;
    answers(&mut agent, "/healthz", 503, r#""nodeEligible": false"#).await?;
    answers(&mut agent, "/livez", 200, "lastUpdated").await?;

    let untaint = json!({"spec": {"taints": null}});
    cluster
        .nodes
        .patch(NODE, &PatchParams::default(), &Patch::Merge(untaint))
        .await?;
    answers(&mut agent, "/healthz", 200, r#""nodeEligible": true"#).await?;
    drop(server);
    Ok(())
}
