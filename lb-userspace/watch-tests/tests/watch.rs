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
    objects::{Cluster, pods, service, slice},
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

    // `lb status` names the source by the API server's URL, says the
    // agent is in sync, and reads the pinned maps' fill (web is gone: no
    // frontend left, the capacity as the datapath has it).
    let status = std::process::Command::new(&agent.lb)
        .args(["status", "-o", "json", "--state-dir"])
        .arg(agent.workdir.join("state"))
        .arg("--pin-dir")
        .arg(&agent.pin_dir)
        .output()?;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    assert_eq!(
        status["source"],
        format!("cluster:{}", server.url()),
        "{status:#}"
    );
    assert_eq!(status["sync_state"], "in sync", "{status:#}");
    let frontends = status["maps"]
        .as_array()
        .and_then(|maps| maps.iter().find(|m| m["map"] == "frontends"))
        .unwrap_or_else(|| panic!("no frontends fill: {status:#}"));
    assert_eq!(frontends["entries"], 0, "{status:#}");
    assert!(frontends["capacity"].as_u64() > Some(0), "{status:#}");
    Ok(())
}

/// `lb agent --dry-run` in cluster mode waits for the initial lists, then
/// prints the plan for the cluster's state and changes nothing.
#[tokio::test]
async fn a_dry_run_prints_the_plan_for_the_clusters_state() -> Result<()> {
    let _serial = EXCLUSIVE.lock().await;
    let Setup { server, cluster } = setup()?;
    cluster.create_node().await?;
    cluster
        .create_served("web", "10.96.0.70", &pods(11, 1))
        .await?;
    let lb = xtask::traffic::target_bin("lb");
    let pin_dir = format!("/sys/fs/bpf/lbw{}dry", std::process::id());
    let out = tokio::time::timeout(
        CONVERGE,
        tokio::process::Command::new(&lb)
            .args([
                "agent",
                "--dry-run",
                "--node-name",
                "node-a",
                "--pin-dir",
                &pin_dir,
            ])
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .output(),
    )
    .await??;
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{plan}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(plan.contains("# against an empty datapath"), "{plan}");
    assert!(
        plan.contains("set frontend 10.96.0.70:80/TCP (internal)")
            && plan.contains("set backend 1 = 10.244.11.1:8080/TCP"),
        "{plan}"
    );
    assert!(
        !std::path::Path::new(&pin_dir).exists(),
        "a dry run pinned something"
    );
    Ok(())
}

/// The peer bug class of issue 9: a Service deleted while the agent was
/// disconnected stays programmed. client-go's reflector relists when its
/// resourceVersion is gone (the API server came back with a new watch
/// cache), and the relisted store replaces the old one whole, so the
/// deletion it never saw as an event is applied.
#[tokio::test]
async fn a_service_deleted_while_the_api_server_is_down_is_removed_after_it_returns() -> Result<()>
{
    let _serial = EXCLUSIVE.lock().await;
    let Setup {
        mut server,
        cluster,
    } = setup()?;
    cluster.create_node().await?;
    cluster
        .create_served("gone", "10.96.0.20", &pods(2, 2))
        .await?;
    cluster
        .create_served("kept", "10.96.0.21", &pods(3, 1))
        .await?;
    let mut agent = Agent::start(&server.kubeconfig(), &[])?;
    converge(&mut agent, "both served", |s| {
        s.has("default/gone:http") && s.has("default/kept:http")
    })
    .await?;

    // The API server goes down; behind its back, etcd loses the Service
    // and its slice (what a deletion through another API server replica
    // would leave).
    server.stop_api_only()?;
    let keys = server.etcd_keys("/registry/")?;
    let doomed: Vec<&String> = keys
        .iter()
        .filter(|k| k.ends_with("/default/gone") || k.ends_with("/default/gone-1"))
        .collect();
    assert_eq!(
        doomed.len(),
        2,
        "the Service's and the slice's keys in {keys:?}"
    );
    for key in doomed {
        server.etcd_delete(key)?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let served = agent.served()?;
    assert!(
        served.has("default/gone:http") && served.has("default/kept:http"),
        "the agent changed the maps while the API server was down: {served:?}"
    );

    server.stop();
    server.start_again()?;
    converge(
        &mut agent,
        "the deleted Service removed, the other kept",
        |s| {
            !s.has("default/gone:http")
                && s.backends("default/kept:http", "10.96.0.21:80") == Some(&at_8080(&pods(3, 1)))
        },
    )
    .await?;
    Ok(())
}

/// A watch whose resourceVersion was compacted away gets 410 Gone, and
/// the reflector relists (client-go's `isExpiredError` path; kube-rs's
/// watcher on `WatchEvent::Error` 410): every change made meanwhile,
/// creations and deletions, converges. The agent is frozen (SIGSTOP) across
/// an API server restart, so its connections are dead and no event of the
/// changes made next can reach it; etcd is then compacted at the current
/// revision and the server restarted once more (a new watch cache), so the
/// agent's resourceVersion is gone when it resumes.
#[tokio::test]
async fn a_watch_expired_by_compaction_relists_and_converges() -> Result<()> {
    let _serial = EXCLUSIVE.lock().await;
    let Setup {
        mut server,
        cluster,
    } = setup()?;
    cluster.create_node().await?;
    cluster
        .create_served("old", "10.96.0.30", &pods(4, 2))
        .await?;
    let mut agent = Agent::start(&server.kubeconfig(), &[])?;
    converge(&mut agent, "old served", |s| s.has("default/old:http")).await?;

    agent.signal(libc::SIGSTOP)?;
    server.restart()?;
    cluster.delete_service("old").await?;
    cluster.delete_slice("old-1").await?;
    cluster
        .create_served("new", "10.96.0.31", &pods(5, 3))
        .await?;
    server.compact()?;
    server.restart()?;
    agent.signal(libc::SIGCONT)?;

    converge(
        &mut agent,
        "the changes made during the expiry applied",
        |s| {
            !s.has("default/old:http")
                && s.backends("default/new:http", "10.96.0.31:80") == Some(&at_8080(&pods(5, 3)))
        },
    )
    .await?;
    assert!(
        agent.count_log("too old resource version") > 0 && agent.count_log("relisted") > 0,
        "converged without an expired watch and a relist: the test did not expire the watch\n{}",
        agent.log()
    );
    Ok(())
}

/// EndpointSliceCache (pkg/proxy/endpointslicecache.go) merges every slice
/// labelled with a Service's name into one endpoint set; removing one
/// slice removes only its endpoints.
#[tokio::test]
async fn endpoint_slices_of_one_service_split_across_objects_merge() -> Result<()> {
    let _serial = EXCLUSIVE.lock().await;
    let Setup { server, cluster } = setup()?;
    cluster.create_node().await?;
    cluster
        .create_service(&service("split", "10.96.0.40", 80, json!({})))
        .await?;
    for (i, block) in [6u8, 7, 8].into_iter().enumerate() {
        let name = format!("split-{i}");
        cluster
            .create_slice(&slice(&name, "split", &pods(block, 2)))
            .await?;
    }
    let mut agent = Agent::start(&server.kubeconfig(), &[])?;
    let all: Vec<String> = [6, 7, 8].into_iter().flat_map(|b| pods(b, 2)).collect();
    let mut expected = at_8080(&all);
    expected.sort();
    converge(&mut agent, "three slices merged", |s| {
        s.backends("default/split:http", "10.96.0.40:80") == Some(&expected)
    })
    .await?;

    cluster.delete_slice("split-1").await?;
    let mut rest = at_8080(&[pods(6, 2), pods(8, 2)].concat());
    rest.sort();
    converge(&mut agent, "the deleted slice's endpoints gone", |s| {
        s.backends("default/split:http", "10.96.0.40:80") == Some(&rest)
    })
    .await?;
    Ok(())
}

/// cmd/kube-proxy/app/server.go's label selector: Services (and slices)
/// labelled `service.kubernetes.io/headless` or with another
/// `service.kubernetes.io/service-proxy-name` are not ours; with
/// `--service-proxy-name` only the objects labelled with our name are. A
/// label change moves a Service between the two (the selector's watch
/// reports it added to one and deleted from the other).
#[tokio::test]
async fn services_labelled_headless_or_for_another_proxy_are_ignored() -> Result<()> {
    let _serial = EXCLUSIVE.lock().await;
    let Setup { server, cluster } = setup()?;
    cluster.create_node().await?;
    let kinds = [
        ("plain", "10.96.0.50", json!({})),
        (
            "headless",
            "10.96.0.51",
            json!({"service.kubernetes.io/headless": ""}),
        ),
        (
            "other",
            "10.96.0.52",
            json!({"service.kubernetes.io/service-proxy-name": "other"}),
        ),
    ];
    for (name, ip, labels) in &kinds {
        cluster
            .create_service(&service(name, ip, 80, labels.clone()))
            .await?;
        let mut slice = slice(&format!("{name}-1"), name, &pods(9, 1));
        let slice_labels = slice.metadata.labels.get_or_insert_default();
        for (key, value) in labels.as_object().into_iter().flatten() {
            slice_labels.insert(key.clone(), value.as_str().unwrap_or_default().into());
        }
        cluster.create_slice(&slice).await?;
    }
    let mut ours = Agent::start(&server.kubeconfig(), &[])?;
    let mut theirs = Agent::start(&server.kubeconfig(), &["--service-proxy-name", "other"])?;
    converge(&mut ours, "only the unlabelled Service", |s| {
        s.0.keys().collect::<Vec<_>>() == ["default/plain:http"]
    })
    .await?;
    converge(
        &mut theirs,
        "only the Service labelled for this proxy",
        |s| s.0.keys().collect::<Vec<_>>() == ["default/other:http"],
    )
    .await?;

    let unlabel =
        json!({"metadata": {"labels": {"service.kubernetes.io/service-proxy-name": null}}});
    cluster.patch_service("other", unlabel.clone()).await?;
    cluster
        .slices
        .patch(
            "other-1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(unlabel),
        )
        .await?;
    converge(&mut ours, "the unlabelled Service became ours", |s| {
        s.has("default/other:http")
            && s.has("default/plain:http")
            && !s.has("default/headless:http")
    })
    .await?;
    converge(&mut theirs, "and left the other proxy", |s| s.0.is_empty()).await?;
    Ok(())
}

/// client-go's WaitForCacheSync: an agent that starts while the API server
/// is down keeps what the pinned maps hold (a restart must not wipe the
/// node's Services) until its lists complete; its watch failures are
/// retried with backoff and logged without flooding.
#[tokio::test]
async fn an_agent_started_while_the_api_server_is_down_deletes_nothing() -> Result<()> {
    let _serial = EXCLUSIVE.lock().await;
    let Setup {
        mut server,
        cluster,
    } = setup()?;
    cluster.create_node().await?;
    cluster
        .create_served("web", "10.96.0.60", &pods(10, 2))
        .await?;
    let mut agent = Agent::start(&server.kubeconfig(), &[])?;
    converge(&mut agent, "web served", |s| s.has("default/web:http")).await?;
    agent.kill();
    server.stop();

    let waiting_before = agent.count_log("initial lists from the API server");
    let failures_before = agent.count_log("watch failed, retrying");
    agent.spawn()?;
    wait_for(
        "the restarted agent to wait for its lists",
        CONVERGE,
        || {
            agent.check_running()?;
            let waiting = agent.count_log("initial lists from the API server") > waiting_before;
            Ok(if waiting { Ok(()) } else { Err(agent.log()) })
        },
    )
    .await?;
    for _ in 0..20 {
        let served = agent.served()?;
        assert!(
            served.backends("default/web:http", "10.96.0.60:80") == Some(&at_8080(&pods(10, 2))),
            "the agent changed the pinned maps before its lists completed: {served:?}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Three reflectors, each failing every backoff step for 3 s: one line
    // each at most (then once a minute).
    let failures = agent.count_log("watch failed, retrying") - failures_before;
    assert!(
        (1..=3).contains(&failures),
        "{failures} watch failure lines in 3 s\n{}",
        agent.log()
    );

    server.start_again()?;
    wait_for("the lists after the API server returned", CONVERGE, || {
        agent.check_running()?;
        let works = agent.count_log("watch works again") >= 1;
        Ok(if works { Ok(()) } else { Err(agent.log()) })
    })
    .await?;
    cluster.delete_service("web").await?;
    converge(
        &mut agent,
        "web removed once the agent listens again",
        |s| !s.has("default/web:http"),
    )
    .await?;
    Ok(())
}

/// kube-proxy's BoundedFrequencyRunner (pkg/proxy/runner): a burst of
/// changes is coalesced into few syncs, and the last state wins. 1,000
/// EndpointSlice updates (ten slices, a hundred each, written as fast as
/// the API server takes them) converge to each slice's last endpoints with
/// far fewer syncs than events. Also measured: one change's time from the
/// API write to the map.
#[tokio::test]
async fn a_burst_of_1000_slice_changes_converges_with_far_fewer_syncs() -> Result<()> {
    const SLICES: u8 = 10;
    const ROUNDS: u8 = 100;
    let _serial = EXCLUSIVE.lock().await;
    let Setup { server, cluster } = setup()?;
    cluster.create_node().await?;
    let ip = |i: u8| format!("10.96.1.{i}");
    for i in 0..SLICES {
        cluster
            .create_served(&format!("burst-{i}"), &ip(i), &pods(100 + i, 1))
            .await?;
    }
    let mut agent = Agent::start(&server.kubeconfig(), &[])?;
    converge(&mut agent, "every burst Service served", |s| {
        (0..SLICES).all(|i| s.has(&format!("default/burst-{i}:http")))
    })
    .await?;

    let started = std::time::Instant::now();
    cluster.set_endpoints("burst-0-1", &pods(100, 2)).await?;
    converge(&mut agent, "one change applied", |s| {
        s.backends("default/burst-0:http", &format!("{}:80", ip(0)))
            == Some(&at_8080(&pods(100, 2)))
    })
    .await?;
    let one_change = started.elapsed();

    let syncs_before = agent.count_log("synced");
    let started = std::time::Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..SLICES {
        let cluster = cluster.clone();
        // Each slice's endpoints grow and shrink between 1 and 5 pods;
        // its last round leaves (ROUNDS - 1) % 5 + 1 of them.
        writers.spawn(async move {
            for round in 0..ROUNDS {
                let count = round % 5 + 1;
                cluster
                    .set_endpoints(&format!("burst-{i}-1"), &pods(100 + i, count))
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(written) = writers.join_next().await {
        written??;
    }
    let written = started.elapsed();
    let last = (ROUNDS - 1) % 5 + 1;
    converge(&mut agent, "every slice's last endpoints", |s| {
        (0..SLICES).all(|i| {
            s.backends(&format!("default/burst-{i}:http"), &format!("{}:80", ip(i)))
                == Some(&at_8080(&pods(100 + i, last)))
        })
    })
    .await?;
    let converged = started.elapsed();
    let syncs = agent.count_log("synced") - syncs_before;
    let events = usize::from(SLICES) * usize::from(ROUNDS);
    eprintln!(
        "one change: {one_change:?} from the API write to the map; burst of {events}: written in \
         {written:?}, converged {:?} after the last write, {syncs} syncs",
        converged - written
    );
    // The bounded-frequency runner (`--min-sync-period`, default 1 s as
    // kube-proxy's): at most one sync per period, plus the first and the
    // last.
    let bound = written.as_secs() as usize + 3;
    assert!(
        syncs <= bound,
        "{syncs} syncs for {events} events (at most {bound} expected): not coalesced\n{}",
        agent.log()
    );
    Ok(())
}
