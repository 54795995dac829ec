//! End-to-end in cluster mode: the test API server and the real agent both
//! run inside the testbed's node namespace (the agent reaches the server on
//! that namespace's loopback); the test changes a Service and its
//! EndpointSlice through the API and real TCP from the external client and
//! from a pod follows. Root; bounded waits; every guard cleans up.

use std::{
    fs::{self, File},
    os::fd::AsRawFd,
    path::PathBuf,
    process::{Child, Command},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use lb_watch_tests::{objects::Cluster, wait_for};
use serde_json::{Value, json};
use xtask::{
    apiserver::ApiServer,
    testbed::{EXTERNAL_DEVICE, NODE_ADDR, NODE_NAME, POD_TCP_PORT, Testbed, pod_addr},
    traffic::{Tally, tally, target_bin},
};

const PODS: usize = 3;
const CLUSTER_IP: &str = "192.0.2.10";
/// A node address that `--nodeport-addresses` leaves out.
const SECONDARY_NODE_ADDR: &str = "198.51.100.7";

/// Runs `work` against the API server, from a thread that entered the
/// node's network namespace (the server listens on its loopback only).
fn through_api<T: Send>(
    bed: &Testbed,
    server: &ApiServer,
    work: impl AsyncFnOnce(Cluster) -> Result<T> + Send,
) -> Result<T> {
    let netns = bed.netns_path(&bed.node_ns());
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let ns =
                    File::open(&netns).with_context(|| format!("opening {}", netns.display()))?;
                // SAFETY: setns on this thread only, with a valid fd.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!(
                        "setns into {}: {}",
                        netns.display(),
                        std::io::Error::last_os_error()
                    );
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async { work(Cluster::new(server.client()?)).await })
            })
            .join()
            .expect("the API thread panicked")
    })
}

fn web_service(node_port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "type": "NodePort", "clusterIP": CLUSTER_IP, "clusterIPs": [CLUSTER_IP],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                       "targetPort": POD_TCP_PORT, "nodePort": node_port}],
        },
    })
}

fn pod_endpoints(pods: &[usize]) -> Vec<String> {
    pods.iter().map(|&i| pod_addr(i).to_string()).collect()
}

/// The node, the Service and its slice over every pod.
async fn create_cluster(cluster: Cluster) -> Result<()> {
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE_NAME},
        "status": {"addresses": [{"type": "InternalIP", "address": NODE_ADDR.to_string()}]},
    });
    cluster
        .nodes
        .create(&Default::default(), &serde_json::from_value(node)?)
        .await?;
    cluster
        .create_service(&serde_json::from_value(web_service(30080))?)
        .await?;
    let mut slice = lb_watch_tests::objects::slice("web-1", "web", &pod_endpoints(&[0, 1, 2]));
    if let Some(port) = slice.ports.as_mut().and_then(|p| p.first_mut()) {
        port.port = Some(i32::from(POD_TCP_PORT));
    }
    cluster.create_slice(&slice).await
}

/// `lb agent` in cluster mode inside the node namespace, attached to the
/// testbed's device and cgroup; killed when dropped.
struct NodeAgent {
    child: Child,
    workdir: PathBuf,
}

impl NodeAgent {
    fn start(bed: &Testbed, server: &ApiServer) -> Result<NodeAgent> {
        let workdir = std::env::temp_dir().join(format!("{}-cluster", bed.prefix));
        fs::create_dir_all(&workdir)?;
        let log = workdir.join("agent.log");
        let out = File::create(&log)?;
        let child = Command::new("nsenter")
            .arg(format!(
                "--net={}",
                bed.netns_path(&bed.node_ns()).display()
            ))
            .arg(target_bin("lb"))
            .arg("agent")
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .args(["--node-name", NODE_NAME, "--device", EXTERNAL_DEVICE])
            .args(["--nodeport-addresses", &format!("{NODE_ADDR}/32")])
            .arg("--cgroup")
            .arg(&bed.cgroup)
            .arg("--pin-dir")
            .arg(&bed.pin_dir)
            .arg("--state-dir")
            .arg(workdir.join("state"))
            .env("RUST_LOG", "info")
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting lb agent")?;
        Ok(NodeAgent { child, workdir })
    }

    fn log(&self) -> String {
        fs::read_to_string(self.workdir.join("agent.log")).unwrap_or_default()
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.log());
        }
        let _ = fs::remove_dir_all(&self.workdir);
    }
}

/// `count` requests to `addr` from the external client (or from pod 0).
fn requests(bed: &Testbed, from_pod: bool, addr: &str, count: u32) -> Result<Tally> {
    let probe = target_bin("lb-probe");
    let mut cmd = if from_pod {
        bed.from_pod(&probe, 0)
    } else {
        bed.from_client(&probe)
    };
    cmd.args([
        "--timeout-ms",
        "1000",
        "tcp",
        addr,
        "--count",
        &count.to_string(),
    ]);
    tally(&mut cmd)
}

/// Waits until 30 requests to `addr` are answered by exactly `pods`.
async fn traffic_reaches(
    bed: &Testbed,
    agent: &NodeAgent,
    from_pod: bool,
    addr: &str,
    pods: &[&str],
) -> Result<()> {
    let result = wait_for(
        &format!("{addr} answered by {pods:?}"),
        Duration::from_secs(20),
        || {
            let tally = requests(bed, from_pod, addr, 30)?;
            let answered: Vec<&str> = tally.answers.keys().map(String::as_str).collect();
            Ok(if tally.errors.is_empty() && answered == pods {
                Ok(())
            } else {
                Err(tally)
            })
        },
    )
    .await;
    result.map_err(|err| err.context(format!("agent log:\n{}", agent.log())))
}

#[tokio::test]
async fn traffic_follows_a_service_changed_through_the_api() -> Result<()> {
    // SAFETY: plain syscall.
    assert_eq!(unsafe { libc::geteuid() }, 0, "end-to-end tests need root");
    xtask::apiserver::build()?;
    let mut bed = Testbed::new(PODS)?;
    bed.start_pod_servers(&target_bin("lb-probe"))?;
    // A second address on the node's external device, outside the agent's
    // `--nodeport-addresses` (NODE_ADDR/32).
    xtask::testbed::run(Command::new("ip").args([
        "-n",
        &bed.node_ns(),
        "addr",
        "add",
        &format!("{SECONDARY_NODE_ADDR}/24"),
        "dev",
        EXTERNAL_DEVICE,
    ]))?;
    let server = ApiServer::start_in_netns(&bed.netns_path(&bed.node_ns()))?;
    through_api(&bed, &server, create_cluster)?;
    let agent = NodeAgent::start(&bed, &server)?;

    let nodeport = format!("{NODE_ADDR}:30080");
    let cluster_ip = format!("{CLUSTER_IP}:80");
    let all = ["pod-1", "pod-2", "pod-3"];
    traffic_reaches(&bed, &agent, false, &nodeport, &all).await?;
    traffic_reaches(&bed, &agent, true, &cluster_ip, &all).await?;
    // kube-proxy's --nodeport-addresses (pkg/proxy/util/nodeport_addresses.go):
    // NodePorts answer only on the node addresses the CIDRs select; on the
    // other address the port is the node's own, where nothing listens.
    let excluded = requests(&bed, false, &format!("{SECONDARY_NODE_ADDR}:30080"), 3)?;
    assert!(
        excluded.answers.is_empty(),
        "the NodePort answers on an address --nodeport-addresses excludes: {excluded:?}"
    );

    // pod-3 leaves the EndpointSlice: no new connection reaches it.
    through_api(&bed, &server, async |cluster| {
        cluster
            .set_endpoints("web-1", &pod_endpoints(&[0, 1]))
            .await
    })?;
    traffic_reaches(&bed, &agent, false, &nodeport, &["pod-1", "pod-2"]).await?;
    traffic_reaches(&bed, &agent, true, &cluster_ip, &["pod-1", "pod-2"]).await?;

    // The NodePort moves: the new one answers, the old one no longer does.
    through_api(&bed, &server, async |cluster| {
        let ports = web_service(30081)["spec"]["ports"].clone();
        cluster
            .patch_service("web", json!({"spec": {"ports": ports}}))
            .await
    })?;
    traffic_reaches(
        &bed,
        &agent,
        false,
        &format!("{NODE_ADDR}:30081"),
        &["pod-1", "pod-2"],
    )
    .await?;
    let old = requests(&bed, false, &nodeport, 3)?;
    assert!(
        old.answers.is_empty(),
        "the old NodePort still answers: {old:?}"
    );

    // The Service is deleted: its ClusterIP no longer leads to a pod.
    through_api(&bed, &server, async |cluster| {
        cluster.delete_service("web").await
    })?;
    wait_for(
        "the deleted Service's ClusterIP to stop answering",
        Duration::from_secs(20),
        || {
            let tally = requests(&bed, true, &cluster_ip, 3)?;
            Ok(if tally.answers.is_empty() {
                Ok(())
            } else {
                Err(tally)
            })
        },
    )
    .await?;
    Ok(())
}
