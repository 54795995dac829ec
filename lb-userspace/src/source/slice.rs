//! An EndpointSlice as lb keeps it: the fields the desired state, the
//! health checks and the metrics read, and nothing else. k8s-openapi's
//! `Endpoint` is about 350 bytes before its strings (every optional field
//! of the API, a whole `targetRef`); at 10,000 Services of 10 endpoints
//! the decoded slices were about 56 MB of the agent's 166 MB peak heap
//! (heaptrack, manifest mode). Kept, an endpoint is 64 bytes plus its
//! strings. Of the labels only the Service's name is kept: a `BTreeMap`
//! of one label allocates a node with room for 11, about 540 bytes a
//! slice (5 MB at 10,000 slices) for the one string lb reads. Both sources convert right after the decode and drop the
//! decoded object (`From<EndpointSlice>`), so what the API accepts is what
//! k8s-openapi's reader accepts, unchanged.

use std::sync::Arc;

use k8s_openapi::{
    api::{
        core::v1::ObjectReference,
        discovery::v1::{
            Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForNode,
            ForZone,
        },
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::Serialize;

use crate::desired::LABEL_SERVICE_NAME;

/// An EndpointSlice, reduced to what lb reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Slice {
    /// Its metadata without `managedFields` and `labels` (the one label
    /// read is `service_name`).
    pub metadata: ObjectMeta,
    /// The `kubernetes.io/service-name` label: the Service the slice is for.
    pub service_name: Option<Box<str>>,
    pub address_type: String,
    pub ports: Option<Vec<EndpointPort>>,
    /// `endpoints`; unset reads as none.
    pub endpoints: Vec<SliceEndpoint>,
}

/// One endpoint of a slice.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SliceEndpoint {
    /// `addresses[0]`: the addresses of one endpoint are fungible and
    /// kube-proxy uses only the first; none when the list is empty.
    pub address: Option<Box<str>>,
    /// `conditions`, each unset when the API leaves it unset.
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    pub node_name: Option<Box<str>>,
    /// `targetRef.name` (the pod, for `lb explain`), shared with every
    /// frontend's endpoint set that lists it (`model::Endpoint::target`).
    pub target: Option<Arc<str>>,
    /// `hints`, boxed: most endpoints have none.
    pub hints: Option<Box<Hints>>,
}

/// An endpoint's topology hints: the zones and nodes named.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Hints {
    pub for_zones: Vec<String>,
    pub for_nodes: Vec<String>,
}

impl From<EndpointSlice> for Slice {
    fn from(slice: EndpointSlice) -> Slice {
        let mut metadata = slice.metadata;
        metadata.managed_fields = None;
        let service_name = (metadata.labels.take())
            .and_then(|mut labels| labels.remove(LABEL_SERVICE_NAME))
            .map(String::into_boxed_str);
        let mut ports = slice.ports;
        if let Some(ports) = &mut ports {
            ports.shrink_to_fit();
        }
        Slice {
            metadata,
            service_name,
            address_type: slice.address_type,
            ports,
            endpoints: endpoints(slice.endpoints.unwrap_or_default()),
        }
    }
}

impl Slice {
    /// The Service the slice is for (its `kubernetes.io/service-name`).
    pub fn service_name(&self) -> Option<&str> {
        self.service_name.as_deref()
    }
}

impl From<Endpoint> for SliceEndpoint {
    fn from(endpoint: Endpoint) -> SliceEndpoint {
        let conditions = endpoint.conditions.unwrap_or_default();
        let hints = endpoint.hints.map(|hints| Hints {
            for_zones: names(hints.for_zones.into_iter().flatten().map(|z| z.name)),
            for_nodes: names(hints.for_nodes.into_iter().flatten().map(|n| n.name)),
        });
        SliceEndpoint {
            address: endpoint
                .addresses
                .into_iter()
                .next()
                .map(String::into_boxed_str),
            ready: conditions.ready,
            serving: conditions.serving,
            terminating: conditions.terminating,
            node_name: endpoint.node_name.map(String::into_boxed_str),
            target: endpoint.target_ref.and_then(|t| t.name).map(Arc::from),
            hints: hints
                .filter(|h| !(h.for_zones.is_empty() && h.for_nodes.is_empty()))
                .map(Box::new),
        }
    }
}

/// What a kept slice holds, as an API object (the fields it dropped
/// unset): for writing a manifest's slices to an API server (the bench).
impl From<&Slice> for EndpointSlice {
    fn from(slice: &Slice) -> EndpointSlice {
        let labels = (slice.service_name.as_deref())
            .map(|name| [(LABEL_SERVICE_NAME.to_owned(), name.to_owned())].into());
        EndpointSlice {
            metadata: ObjectMeta {
                labels,
                ..slice.metadata.clone()
            },
            address_type: slice.address_type.clone(),
            ports: slice.ports.clone(),
            endpoints: Some(slice.endpoints.iter().map(Endpoint::from).collect()),
        }
    }
}

impl From<&SliceEndpoint> for Endpoint {
    fn from(endpoint: &SliceEndpoint) -> Endpoint {
        let conditions = [endpoint.ready, endpoint.serving, endpoint.terminating];
        let hints = endpoint.hints.as_deref();
        Endpoint {
            addresses: endpoint.address.iter().map(|a| a.to_string()).collect(),
            conditions: conditions
                .iter()
                .any(Option::is_some)
                .then_some(EndpointConditions {
                    ready: endpoint.ready,
                    serving: endpoint.serving,
                    terminating: endpoint.terminating,
                }),
            node_name: endpoint.node_name.as_deref().map(str::to_owned),
            target_ref: endpoint.target.as_deref().map(|name| ObjectReference {
                name: Some(name.to_owned()),
                ..ObjectReference::default()
            }),
            hints: hints.map(|h| EndpointHints {
                for_zones: Some(
                    h.for_zones
                        .iter()
                        .map(|name| ForZone { name: name.clone() })
                        .collect(),
                ),
                for_nodes: Some(
                    h.for_nodes
                        .iter()
                        .map(|name| ForNode { name: name.clone() })
                        .collect(),
                ),
            }),
            ..Endpoint::default()
        }
    }
}

/// The kept endpoints, with no spare room (a collect may reuse the
/// decoded list's larger allocation).
fn endpoints(decoded: Vec<Endpoint>) -> Vec<SliceEndpoint> {
    let mut kept: Vec<SliceEndpoint> = decoded.into_iter().map(SliceEndpoint::from).collect();
    kept.shrink_to_fit();
    kept
}

fn names(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = names.collect();
    names.shrink_to_fit();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::manifests::parse_documents;

    /// Every field lb reads survives the conversion; a hint list that is
    /// empty reads as no hints, as endpoint choice reads both.
    #[test]
    fn a_kept_slice_holds_what_lb_reads() {
        let text = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {name: web-1, namespace: app, labels: {kubernetes.io/service-name: web},\n\
             \x20 annotations: {endpoints.kubernetes.io/last-change-trigger-time: '2026-01-01T00:00:00Z'}}\n\
             addressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}]\nendpoints:\n\
             - addresses: [10.0.0.1, 10.0.0.9]\n  conditions: {ready: false, serving: true, terminating: true}\n\
             \x20 nodeName: n1\n  zone: z1\n  hostname: h\n  targetRef: {kind: Pod, name: web-abc, namespace: app}\n\
             \x20 hints: {forZones: [{name: z1}], forNodes: [{name: n1}]}\n\
             - addresses: []\n  hints: {forZones: []}\n";
        let set = parse_documents("web.yaml", text);
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        let slice = &set.slices[0];
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(8080));
        assert!(slice.metadata.annotations.is_some());
        assert_eq!(slice.service_name(), Some("web"));
        assert_eq!(slice.metadata.labels, None, "kept as service_name");
        assert_eq!(
            slice.endpoints[0],
            SliceEndpoint {
                address: Some("10.0.0.1".into()),
                ready: Some(false),
                serving: Some(true),
                terminating: Some(true),
                node_name: Some("n1".into()),
                target: Some("web-abc".into()),
                hints: Some(Box::new(Hints {
                    for_zones: vec!["z1".into()],
                    for_nodes: vec!["n1".into()],
                })),
            }
        );
        assert_eq!(slice.endpoints[1], SliceEndpoint::default());
        let back = Slice::from(EndpointSlice::from(&**slice));
        assert_eq!(&back, &**slice, "the API form keeps every kept field");
    }

    /// The point of the form: an endpoint costs a fifth of k8s-openapi's.
    #[test]
    fn a_kept_endpoint_is_small() {
        assert_eq!(std::mem::size_of::<SliceEndpoint>(), 64);
        assert!(std::mem::size_of::<Endpoint>() > 5 * 64);
    }
}
