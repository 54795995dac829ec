//! The cluster-mode section's subjects: a real API server (etcd and the
//! k8s.io/apiserver build of xtask/k8s-apiserver) holding the fixture's
//! Services and EndpointSlices and this node's Node, and the real agent
//! (release) watching it, with nothing attached (only its maps matter),
//! scraped on its own metrics port.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    core::v1::{Namespace, Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use lb::source::manifests;
use serde_json::json;
use xtask::{apiserver::ApiServer, scrape};

use crate::fixture::{log_tail, manifests_text, max_tables, process_memory_kib, release_bin};

pub const NODE: &str = "bench-node";
pub const NAMESPACE: &str = "bench";
/// The annotation the EndpointSlice controller stamps each change with.
pub const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Objects created at once (the API server takes them in parallel).
const IN_FLIGHT: usize = 32;

/// The API server with the fixture's objects, and a runtime to talk to it.
pub struct Cluster {
    pub runtime: tokio::runtime::Runtime,
    pub server: ApiServer,
    pub slices: Api<EndpointSlice>,
}

impl Cluster {
    /// A fresh server holding the Node and `services` Services with their
    /// slices (the same fixture as the manifest-mode sections).
    pub fn start(services: usize) -> Result<Cluster> {
        xtask::apiserver::build()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let server = ApiServer::start()?;
        // kube's client spawns its connection tasks on the runtime it is
        // made in.
        let client = {
            let _inside = runtime.enter();
            server.client()?
        };
        let slices = Api::namespaced(client.clone(), NAMESPACE);
        let cluster = Cluster {
            runtime,
            server,
            slices,
        };
        cluster.runtime.block_on(create_objects(client, services))?;
        Ok(cluster)
    }

    /// Sets the endpoints of `slice` to `addresses` (ready, port 8080 as
    /// the fixture's), stamped with the trigger time now.
    /// Returns the trigger time written.
    pub fn set_endpoints(&self, slice: &str, addresses: &[Ipv4Addr]) -> Result<SystemTime> {
        let endpoints: Vec<_> = addresses
            .iter()
            .map(|a| json!({"addresses": [a.to_string()], "conditions": {"ready": true}}))
            .collect();
        let at = SystemTime::now();
        let now = k8s_openapi::jiff::Timestamp::try_from(at)?.to_string();
        let patch = json!({
            "metadata": {"annotations": {TRIGGER_TIME: now}},
            "endpoints": endpoints,
        });
        self.runtime.block_on(self.slices.patch(
            slice,
            &PatchParams::default(),
            &Patch::Merge(patch),
        ))?;
        Ok(at)
    }
}

async fn create_objects(client: kube::Client, services: usize) -> Result<()> {
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": NODE},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.5"}]},
    }))?;
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await?;
    let objects = manifests::parse_documents("bench.yaml", &manifests_text(services));
    if !objects.problems.is_empty() {
        bail!("the fixture has problems: {:?}", objects.problems);
    }
    let service_api: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let slice_api: Api<EndpointSlice> = Api::namespaced(client, NAMESPACE);
    futures::stream::iter(objects.services)
        .map(|svc| {
            let api = service_api.clone();
            async move { api.create(&PostParams::default(), &svc).await.map(drop) }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await
        .context("creating the fixture's Services")?;
    futures::stream::iter(objects.slices.iter().map(|s| EndpointSlice::from(&**s)))
        .map(|slice| {
            let api = slice_api.clone();
            async move { api.create(&PostParams::default(), &slice).await.map(drop) }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await
        .context("creating the fixture's EndpointSlices")?;
    Ok(())
}

/// `lb agent` in cluster mode on pins of its own; killed, and its pins
/// and directory removed, on drop.
pub struct ClusterAgent {
    child: Option<Child>,
    /// When the process was spawned.
    pub started: Instant,
    pub metrics: SocketAddr,
    pub pin_dir: PathBuf,
    workdir: PathBuf,
}

impl ClusterAgent {
    pub fn start(cluster: &Cluster, services: usize) -> Result<ClusterAgent> {
        let lb = release_bin("lb");
        crate::fixture::require(&lb)?;
        let name = format!("lbbc{}", std::process::id());
        let workdir = std::env::temp_dir().join(&name);
        fs::create_dir_all(&workdir)?;
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(&name);
        let metrics = scrape::free_loopback_address()?;
        let healthz = scrape::free_loopback_address()?;
        let log = fs::File::create(workdir.join("agent.log"))?;
        let child = Command::new(&lb)
            .arg("agent")
            .arg("--kubeconfig")
            .arg(cluster.server.kubeconfig())
            .args(["--node-name", NODE])
            .arg("--pin-dir")
            .arg(&pin_dir)
            .arg("--state-dir")
            .arg(workdir.join("state"))
            .args(["--metrics-bind-address", &metrics.to_string()])
            .args(["--healthz-bind-address", &healthz.to_string()])
            .args(["--max-tables", &max_tables(services).to_string()])
            // No periodic resync inside a measurement; kube-proxy's
            // default minimum interval between syncs (1 s) stays.
            .args(["--sync-period", "1h"])
            .env("RUST_LOG", "info")
            .env_remove("LB_DEVICES")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting lb agent in cluster mode")?;
        Ok(ClusterAgent {
            child: Some(child),
            started: Instant::now(),
            metrics,
            pin_dir,
            workdir,
        })
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.workdir.join("agent.log")).unwrap_or_default()
    }

    /// `/metrics` now (`None` while the endpoint is not up yet).
    pub fn scrape(&self) -> Result<Option<String>> {
        Ok(scrape::http_get(self.metrics, "/metrics")?.map(|(_, body)| body))
    }

    /// The sample `name` of `/metrics` (0 while unknown).
    pub fn metric(&self, name: &str) -> Result<f64> {
        Ok(self
            .scrape()?
            .and_then(|text| scrape::metric(&text, name))
            .unwrap_or(0.0))
    }

    /// Polls until `done` holds, every 20 ms, for at most `limit`; the
    /// error carries the agent's last log lines.
    pub fn wait(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&Self) -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + limit;
        while !done(self)? {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "the agent exited ({status}) waiting for {what}:\n{}",
                    self.tail()
                );
            }
            if Instant::now() > deadline {
                bail!("{what}: not within {limit:?}:\n{}", self.tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn tail(&self) -> String {
        log_tail(&self.workdir.join("agent.log"), 20)
    }

    pub fn memory_kib(&self) -> Result<(u64, u64)> {
        let pid = self
            .child
            .as_ref()
            .context("the agent is not running")?
            .id();
        process_memory_kib(pid)
    }
}

impl Drop for ClusterAgent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = lb::datapath::Datapath::remove_pins(&self.pin_dir);
        let _ = fs::remove_dir_all(&self.workdir);
    }
}
