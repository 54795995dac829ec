//! kube-proxy's health rules (proxy_health.go and its tests), over real
//! HTTP on a loopback port.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;

use super::*;
use crate::{
    agent::http::get,
    source::cluster::{TO_BE_DELETED_TAINT, node_eligible},
};

async fn serving(health: &Arc<Health>) -> SocketAddr {
    let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
    serve(any_port, health.clone(), Metrics::new())
        .await
        .expect("serve")
}

/// Upstream: "The proxy is healthy while it's starting up or the proxy is
/// fully synced"; the body is upstream's JSON (`lastUpdated`,
/// `currentTime`, and `nodeEligible` for /healthz), and while healthy
/// `lastUpdated` is the current time.
#[tokio::test]
async fn healthy_at_start_with_kube_proxys_json_body() {
    let health = Health::new(Duration::from_secs(60));
    let address = serving(&health).await;
    let (status, body) = get(address, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["nodeEligible"], true);
    assert_eq!(json["lastUpdated"], json["currentTime"]);
    let current = json["currentTime"].as_str().unwrap();
    assert!(
        current.ends_with(" +0000 UTC"),
        "Go's time format: {current}"
    );
    let (status, body) = get(address, "/livez").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert!(json.get("nodeEligible").is_none(), "{body}");
    assert_eq!(get(address, "/metrics").await.0, 404);
}

/// Upstream: unhealthy once "the delay between QueuedUpdate() calls and
/// Updated() calls exceeded healthTimeout"; an update clears it; a queued
/// change younger than the timeout is "not late yet".
#[tokio::test]
async fn a_change_queued_past_the_timeout_is_503_until_an_update() {
    let health = Health::new(Duration::from_millis(300));
    let address = serving(&health).await;
    health.updated();
    health.queued_update();
    assert_eq!(get(address, "/healthz").await.0, 200, "not late yet");
    tokio::time::sleep(Duration::from_millis(150)).await;
    // A later change does not restart the clock: the oldest counts.
    health.queued_update();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (status, body) = get(address, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_ne!(
        json["lastUpdated"], json["currentTime"],
        "the real last update"
    );
    assert_eq!(get(address, "/livez").await.0, 503);
    health.updated();
    assert_eq!(get(address, "/healthz").await.0, 200);
    assert_eq!(get(address, "/livez").await.0, 200);
}

/// Upstream's NodeManager rule: a node being deleted or tainted
/// `ToBeDeletedByClusterAutoscaler` is not eligible: /healthz is 503 with
/// `nodeEligible: false`; /livez ignores the node.
#[tokio::test]
async fn an_ineligible_node_fails_healthz_but_not_livez() {
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "n"},
        "spec": {"taints": [{"key": TO_BE_DELETED_TAINT, "effect": "NoSchedule"}]}
    }))
    .unwrap();
    assert!(!node_eligible(&node));
    let deleting: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "n", "deletionTimestamp": "2026-01-01T00:00:00Z"}
    }))
    .unwrap();
    assert!(!node_eligible(&deleting));
    assert!(node_eligible(&Node::default()));

    let health = Health::new(Duration::from_secs(60));
    let address = serving(&health).await;
    health.set_node_eligible(node_eligible(&node));
    let (status, body) = get(address, "/healthz").await;
    assert_eq!(status, 503);
    assert!(body.ends_with(r#""nodeEligible": false}"#), "{body}");
    assert_eq!(get(address, "/livez").await.0, 200);
}

#[test]
fn times_are_written_as_go_writes_them() {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
    assert_eq!(go_time(Some(t)), "2023-11-14 22:13:20.25 +0000 UTC");
    let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(go_time(Some(whole)), "2023-11-14 22:13:20 +0000 UTC");
    assert_eq!(go_time(None), "0001-01-01 00:00:00 +0000 UTC");
}
