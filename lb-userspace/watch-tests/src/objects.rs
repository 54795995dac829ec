//! Services, EndpointSlices and Nodes as tests write them: the API server
//! has no controllers and no ClusterIP allocation, so each carries what a
//! real cluster would have filled in.

use anyhow::Result;
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

pub const NAMESPACE: &str = "default";
pub const NODE: &str = "node-a";

pub fn service(name: &str, cluster_ip: &str, port: u16, labels: Value) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ports": [{"name": "http", "port": port, "protocol": "TCP", "targetPort": 8080}],
        },
    }))
    .expect("a Service")
}

/// A slice of `service` with ready endpoints at `addresses`, port 8080.
pub fn slice(name: &str, service: &str, addresses: &[String]) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints(addresses),
    }))
    .expect("an EndpointSlice")
}

pub fn endpoints(addresses: &[String]) -> Value {
    addresses
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true}, "nodeName": NODE}))
        .collect()
}

pub fn node(name: &str) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": "zone-a"}},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.5"}]},
    }))
    .expect("a Node")
}

/// The typed APIs of one server.
#[derive(Clone)]
pub struct Cluster {
    pub services: Api<Service>,
    pub slices: Api<EndpointSlice>,
    pub nodes: Api<Node>,
}

impl Cluster {
    pub fn new(client: Client) -> Cluster {
        Cluster {
            services: Api::namespaced(client.clone(), NAMESPACE),
            slices: Api::namespaced(client.clone(), NAMESPACE),
            nodes: Api::all(client),
        }
    }

    pub async fn create_node(&self) -> Result<()> {
        self.nodes
            .create(&PostParams::default(), &node(NODE))
            .await?;
        Ok(())
    }

    pub async fn create_service(&self, service: &Service) -> Result<()> {
        self.services
            .create(&PostParams::default(), service)
            .await?;
        Ok(())
    }

    pub async fn create_slice(&self, slice: &EndpointSlice) -> Result<()> {
        self.slices.create(&PostParams::default(), slice).await?;
        Ok(())
    }

    /// A Service with one slice of ready endpoints.
    pub async fn create_served(
        &self,
        name: &str,
        cluster_ip: &str,
        addresses: &[String],
    ) -> Result<()> {
        self.create_service(&service(name, cluster_ip, 80, json!({})))
            .await?;
        self.create_slice(&slice(&format!("{name}-1"), name, addresses))
            .await
    }

    pub async fn patch_service(&self, name: &str, patch: Value) -> Result<()> {
        self.services
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    pub async fn set_endpoints(&self, slice: &str, addresses: &[String]) -> Result<()> {
        let patch = json!({"endpoints": endpoints(addresses)});
        self.slices
            .patch(slice, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    pub async fn delete_service(&self, name: &str) -> Result<()> {
        self.services.delete(name, &DeleteParams::default()).await?;
        Ok(())
    }

    pub async fn delete_slice(&self, name: &str) -> Result<()> {
        self.slices.delete(name, &DeleteParams::default()).await?;
        Ok(())
    }
}

/// `count` pod addresses from 10.244.<block>.1 on.
pub fn pods(block: u8, count: u8) -> Vec<String> {
    (1..=count).map(|i| format!("10.244.{block}.{i}")).collect()
}
