//! Cluster mode's source: Services, EndpointSlices and this node's Node
//! from the API server, through kube-rs reflectors.
//!
//! `client` connects, `selectors` says what is watched (kube-proxy's
//! selectors), `reflect` runs one reflector per kind and wakes the agent,
//! `readiness` says when the stores may be served, `node_facts` and
//! `nodeport_addresses` turn the Node object into the node's facts,
//! `error_log` keeps watch failures from flooding the log.
mod client;
mod error_log;
mod node_facts;
mod nodeport_addresses;
mod readiness;
mod reflect;
pub mod selectors;
mod store;
#[cfg(test)]
mod tests;

use std::{path::PathBuf, sync::Arc};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{Api, Resource, runtime::watcher};
use tokio::sync::watch;

pub use client::ClientError;
pub use node_facts::{TO_BE_DELETED_TAINT, ZONE_LABEL, node_eligible, node_facts, primary_ipv4};
pub use nodeport_addresses::NodePortAddresses;
pub use readiness::Progress;

use super::{Slice, Snapshot, Source, SourceError, node};
use reflect::Reflector;

/// What cluster mode is told on the command line.
#[derive(Clone, Debug, Default)]
pub struct ClusterConfig {
    /// None: KUBECONFIG, ~/.kube/config, or the in-cluster config.
    pub kubeconfig: Option<PathBuf>,
    pub node_name: String,
    /// Serve the objects labelled `service.kubernetes.io/service-proxy-name`
    /// with this name instead of the unlabelled ones.
    pub service_proxy_name: Option<String>,
    pub nodeport_addresses: NodePortAddresses,
}

/// The reflectors of one API server.
pub struct ClusterSource {
    server: String,
    config: ClusterConfig,
    services: Reflector<Service>,
    slices: Reflector<Slice>,
    nodes: Reflector<Node>,
    wake: watch::Receiver<u64>,
}

impl ClusterSource {
    /// Connects and starts the reflectors (on the current tokio runtime).
    /// Connecting does not wait for the server: an API server that is down
    /// is retried by the reflectors, and snapshots fail until it answers.
    pub async fn start(config: ClusterConfig) -> Result<ClusterSource, ClientError> {
        let (client, server) = client::connect(config.kubeconfig.as_deref()).await?;
        let labels = selectors::label_selector(config.service_proxy_name.as_deref());
        let (wake_tx, wake) = watch::channel(0);
        let watched = watcher::Config::default().labels(&labels);
        let services = reflect::spawn(
            Api::<Service>::all(client.clone()),
            watched.clone(),
            "Service",
            wake_tx.clone(),
            |service| service,
        );
        let slices = reflect::spawn(
            Api::<EndpointSlice>::all(client.clone()),
            watched,
            "EndpointSlice",
            wake_tx.clone(),
            Slice::from,
        );
        let nodes = reflect::spawn(
            Api::<Node>::all(client),
            watcher::Config::default().fields(&selectors::node_field_selector(&config.node_name)),
            "Node",
            wake_tx,
            |node| node,
        );
        tracing::info!(
            server,
            labels,
            node = config.node_name,
            "watching the API server"
        );
        Ok(ClusterSource {
            server,
            config,
            services,
            slices,
            nodes,
            wake,
        })
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    fn progress(&self) -> Progress {
        Progress {
            services_listed: self.services.listed(),
            slices_listed: self.slices.listed(),
            node_listed: self.nodes.listed(),
            node_present: self.this_node().is_some(),
        }
    }

    fn this_node(&self) -> Option<Arc<Node>> {
        let name = &self.config.node_name;
        self.nodes
            .store
            .find(|node| node.meta().name.as_ref() == Some(name))
    }

    /// The stores now, if they may be served.
    fn read(&self) -> Result<Snapshot, SourceError> {
        readiness::check(self.progress(), &self.server, &self.config.node_name)?;
        let node = self.this_node().ok_or_else(|| SourceError::NodeMissing {
            server: self.server.clone(),
            node: self.config.node_name.clone(),
        })?;
        let local = node::local_ipv4_addresses().map_err(SourceError::Interfaces)?;
        Ok(Snapshot {
            // The stores' own objects, in the stores' order: nothing
            // downstream depends on it (the desired state sorts by name,
            // and API objects' versions combine in any order), and sorting
            // 20,000 objects per sync would cost more than the sync.
            services: self.services.store.state(),
            slices: self.slices.store.state(),
            node: Some(node_facts(&node, &self.config.nodeport_addresses, &local)),
            node_eligible: Some(node_eligible(&node)),
            ..Snapshot::default()
        })
    }
}

impl Source for ClusterSource {
    fn snapshot(&self) -> impl Future<Output = Result<Snapshot, SourceError>> + Send {
        std::future::ready(self.read())
    }

    /// The next change of any store after the last wake-up this returned.
    /// A future dropped before it resolves marks nothing seen, so no
    /// change is lost.
    async fn changed(&mut self) {
        if self.wake.changed().await.is_err() {
            // Every reflector ended (the runtime is shutting down).
            std::future::pending::<()>().await;
        }
    }
}
