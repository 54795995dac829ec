//! Cluster mode against a real API server and etcd (`xtask/k8s-apiserver`):
//! the real agent watches, the tests change objects through the API (or
//! behind its back, in etcd) and read the pinned maps back. Root; every
//! wait bounded; the agent and the server are stopped by their guards.

use std::time::Duration;

use anyhow::Result;
use lb_watch_tests::{
    EXCLUSIVE,
    agent::{Agent, Served},
    assert_root,
    objects::{Cluster, pods},
    wait_for,
};
use serde_json::json;
use xtask::apiserver::ApiServer;

const CONVERGE: Duration = Duration::from_secs(20);

struct Setup {
    server: ApiServer,
    cluster: Cluster,
}

fn setup() -> Result<Setup> {
    assert_root();
    xtask::apiserver::build()?;
    let server = ApiServer::start()?;
    let cluster = Cluster::new(server.client()?);
    Ok(Setup { server, cluster })
}

/// Waits until the agent's maps pass `check`.
async fn converge(
    agent: &mut Agent,
    what: &str,
    check: impl Fn(&Served) -> bool,
) -> Result<Served> {
    let result = wait_for(what, CONVERGE, || {
        let served = agent.served()?;
        Ok(if check(&served) {
            Ok(served)
        } else {
            Err(served)
        })
    })
    .await;
    result.map_err(|err| err.context(format!("agent log:\n{}", agent.log())))
}

/// The backends `pods` are as the maps list them (port 8080).
fn at_8080(pods: &[String]) -> Vec<String> {
    pods.iter().map(|p| format!("{p}:8080")).collect()
}

/// kube-proxy's ServiceChangeTracker/EndpointsChangeTracker: every Add,
/// Update and Delete of a Service or EndpointSlice reaches the proxy rules.
/// Also: the agent waits for its Node (server.go waits for the node's
/// object before it can know its addresses), saying so.
#[tokio::test]
async fn maps_follow_services_created_changed_and_deleted() -> Result<()> {
    let _serial = EXCLUSIVE.lock().await;
    let Setup { server, cluster } = setup()?;
    cluster
        .create_served("web", "10.96.0.10", &pods(1, 2))
        .await?;
    let mut agent = Agent::start(&server.kubeconfig(), &[])?;
    wait_for("the agent to say its Node is missing", CONVERGE, || {
        agent.check_running()?;
        Ok(if agent.count_log("does not exist") > 0 {
            Ok(())
        } else {
            Err(())
        })
    })
    .await?;
    assert!(
        !agent.served()?.has("default/web:http"),
        "served before its Node existed"
    );
    cluster.create_node().await?;
    converge(&mut agent, "web served", |s| {
        s.backends("default/web:http", "10.96.0.10:80") == Some(&at_8080(&pods(1, 2)))
    })
    .await?;

    cluster.set_endpoints("web-1", &pods(1, 3)).await?;
    converge(&mut agent, "web's endpoints changed", |s| {
        s.backends("default/web:http", "10.96.0.10:80") == Some(&at_8080(&pods(1, 3)))
    })
    .await?;

    cluster
        .patch_service(
            "web",
            json!({"spec": {"clusterIP": "10.96.0.11", "clusterIPs": ["10.96.0.11"]}}),
        )
        .await?;
    converge(&mut agent, "web moved to its new ClusterIP", |s| {
        s.frontends("default/web:http") == ["10.96.0.11:80 internal"]
    })
    .await?;

    cluster.delete_service("web").await?;
    converge(&mut agent, "web removed", |s| !s.has("default/web:http")).await?;
    Ok(())
}
