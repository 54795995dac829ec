//! The node's facts from its Node object: name, primary address, zone,
//! and whether it is eligible to serve (for `/healthz`).

use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::Node;

use super::NodePortAddresses;
use crate::model::NodeFacts;

/// The zone label topology-aware routing compares with endpoints' zones.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The node's primary IPv4 address, as `GetNodeHostIPs` orders a Node's
/// addresses: every InternalIP first, then every ExternalIP; the first of
/// our family is the primary one.
pub fn primary_ipv4(node: &Node) -> Option<Ipv4Addr> {
    let addresses = node.status.as_ref()?.addresses.as_deref()?;
    ["InternalIP", "ExternalIP"]
        .iter()
        .flat_map(|kind| addresses.iter().filter(move |a| a.type_ == *kind))
        .find_map(|a| match a.address.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => Some(v4),
            _ => None,
        })
}

/// What the desired state needs to know of this node: its name, the
/// addresses NodePorts listen on (chosen among `local` by the
/// `--nodeport-addresses` rule) and its zone label.
pub fn node_facts(node: &Node, rule: &NodePortAddresses, local: &[Ipv4Addr]) -> NodeFacts {
    NodeFacts {
        name: node.metadata.name.clone().unwrap_or_default(),
        addresses: rule.select(local, primary_ipv4(node)),
        zone: node
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(ZONE_LABEL))
            .cloned(),
    }
}

/// The taint the cluster autoscaler puts on a node it is about to delete.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// Upstream's `NodeManager` rule: a node is eligible unless it is being
/// deleted or the cluster autoscaler marked it for deletion.
pub fn node_eligible(node: &Node) -> bool {
    let deleting = node.metadata.deletion_timestamp.is_some();
    let marked = node
        .spec
        .as_ref()
        .and_then(|spec| spec.taints.as_ref())
        .is_some_and(|taints| taints.iter().any(|t| t.key == TO_BE_DELETED_TAINT));
    !deleting && !marked
}
