//! EndpointSlices: each slice read and checked, the slices of one Service
//! merged, and a slice's endpoint made into a [`Candidate`] for one Service
//! port. `Candidate` lives here, below endpoint choice, which reads it: no
//! import goes in a circle.

use std::{
    borrow::Borrow,
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use k8s_openapi::api::discovery::v1::EndpointPort;

use super::{
    addresses::{self as check, Verdict},
    family,
    meta::{namespace_of, sorted_by_name},
    problems::Problems,
    validate::{parse_addr, port_number, protocol_problem},
};
use crate::{
    model::{Backend, Endpoint, NodeFacts, ProblemCode, Protocol, ServicePortName},
    source::slice::{Slice, SliceEndpoint},
};

/// An endpoint of a slice, reduced to what endpoint choice needs.
#[derive(Clone, Debug)]
struct SliceEp {
    /// Its place in the slice's `endpoints`, for problems.
    index: usize,
    addrs: Vec<IpAddr>,
    ready: bool,
    serving: bool,
    terminating: bool,
    node_name: Option<String>,
    target: Option<Arc<str>>,
    zone_hints: Vec<String>,
    node_hints: Vec<String>,
}

/// A port of a slice: (name, protocol) is what a Service port matches.
#[derive(Clone, Debug)]
struct SlicePort {
    name: String,
    protocol: Protocol,
    port: u16,
}

#[derive(Debug)]
struct SliceView {
    object: String,
    ports: Vec<SlicePort>,
    endpoints: Vec<SliceEp>,
}

/// One backend of a Service port with its conditions (kube-proxy's
/// `Endpoint`: what `CategorizeEndpoints` sorts).
#[derive(Clone, Debug)]
pub(super) struct Candidate {
    pub(super) backend: Backend,
    pub(super) ready: bool,
    pub(super) serving: bool,
    pub(super) terminating: bool,
    /// On this node (kube-proxy's `IsLocal`).
    pub(super) local: bool,
    /// On another node, by name.
    pub(super) remote: bool,
    pub(super) target: Option<Arc<str>>,
    pub(super) zone_hints: Vec<String>,
    pub(super) node_hints: Vec<String>,
}

impl Candidate {
    fn new(backend: Backend, ep: &SliceEp, node: &NodeFacts) -> Candidate {
        Candidate {
            backend,
            ready: ep.ready,
            serving: ep.serving,
            terminating: ep.terminating,
            local: !node.name.is_empty() && ep.node_name.as_deref() == Some(node.name.as_str()),
            remote: !node.name.is_empty()
                && ep
                    .node_name
                    .as_deref()
                    .is_some_and(|name| name != node.name),
            target: ep.target.clone(),
            zone_hints: ep.zone_hints.clone(),
            node_hints: ep.node_hints.clone(),
        }
    }

    /// kube-proxy's fallback when nothing is ready: still serving, going away.
    pub(super) fn serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }

    /// The endpoint as a frontend uses it; `fallback` when it was chosen only
    /// because no endpoint was ready.
    pub(super) fn endpoint(&self, fallback: bool) -> Endpoint {
        Endpoint {
            backend: self.backend,
            terminating: fallback,
            local: self.local,
            remote: self.remote,
            target: self.target.clone(),
        }
    }
}

/// The served slices, by (namespace, Service name), each service's slices
/// in name order (the order duplicates are resolved in).
#[derive(Default)]
pub(super) struct SliceIndex {
    by_service: BTreeMap<(String, String), Vec<SliceView>>,
}

impl SliceIndex {
    pub(super) fn build(slices: &[impl Borrow<Slice>], problems: &mut Problems) -> SliceIndex {
        let mut index = SliceIndex::default();
        let sorted = sorted_by_name(slices, |s| &s.borrow().metadata);
        for slice in sorted.into_iter().map(Borrow::borrow) {
            let Some(service) = slice.service_name() else {
                // Not managed for a Service (a custom controller's): not ours.
                continue;
            };
            let namespace = namespace_of(&slice.metadata.namespace).to_owned();
            let object = format!(
                "EndpointSlice {namespace}/{}",
                slice.metadata.name.as_deref().unwrap_or_default()
            );
            if let Some(view) = slice_view(slice, &object, problems) {
                index
                    .by_service
                    .entry((namespace, service.to_owned()))
                    .or_default()
                    .push(view);
            }
        }
        index
    }

    /// Every endpoint address of every served slice.
    pub(super) fn endpoint_addresses(&self) -> BTreeSet<IpAddr> {
        self.by_service
            .values()
            .flatten()
            .flat_map(|slice| &slice.endpoints)
            .flat_map(|ep| ep.addrs.iter().copied())
            .collect()
    }

    /// Drops the endpoints whose address is a ClusterIP (`taken`: each with
    /// the Service it belongs to): traffic for a ClusterIP is that Service's,
    /// and a backend there would loop through the frontend.
    pub(super) fn refuse_cluster_ips(
        &mut self,
        taken: &BTreeMap<IpAddr, String>,
        problems: &mut Problems,
    ) {
        for slice in self.by_service.values_mut().flatten() {
            for ep in &mut slice.endpoints {
                ep.addrs.retain(|addr| {
                    let Some(service) = taken.get(addr) else {
                        return true;
                    };
                    problems.push(
                        &slice.object,
                        ProblemCode::EndpointIsClusterIp,
                        format!(
                            "endpoints[{}].addresses[0] \"{addr}\" is the ClusterIP of {service}: an endpoint must be a pod or node address; the endpoint is not used",
                            ep.index
                        ),
                    );
                    false
                });
            }
        }
    }

    /// The endpoints of one Service port, merged over its slices, one per
    /// backend. A later copy of an address replaces an earlier one unless it
    /// is terminating (a reused pod IP prefers the running pod), as
    /// kube-proxy does.
    pub(super) fn candidates(
        &self,
        namespace: &str,
        service: &str,
        port: &ServicePortName,
        node: &NodeFacts,
    ) -> Vec<Candidate> {
        let key = (namespace.to_owned(), service.to_owned());
        let mut by_backend: BTreeMap<Backend, Candidate> = BTreeMap::new();
        for slice in self.by_service.get(&key).into_iter().flatten() {
            for slice_port in slice
                .ports
                .iter()
                .filter(|p| p.name == port.port_name && p.protocol == port.protocol)
            {
                for ep in &slice.endpoints {
                    for addr in &ep.addrs {
                        let backend = Backend {
                            addr: *addr,
                            port: slice_port.port,
                            protocol: port.protocol,
                        };
                        let candidate = Candidate::new(backend, ep, node);
                        if !(by_backend.contains_key(&backend) && candidate.terminating) {
                            by_backend.insert(backend, candidate);
                        }
                    }
                }
            }
        }
        by_backend.into_values().collect()
    }
}

/// Reads one slice; `None` for slices that are not served or are invalid.
fn slice_view(slice: &Slice, object: &str, problems: &mut Problems) -> Option<SliceView> {
    match family::slice_is_served(&slice.address_type) {
        Ok(true) => {}
        Ok(false) => return None,
        Err(problem) => {
            problems.push(object, ProblemCode::InvalidValue, problem);
            return None;
        }
    }
    let ports = slice
        .ports
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, port)| slice_port(i, port, object, problems))
        .collect();
    let endpoints = slice
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| slice_endpoint(i, ep, object, problems))
        .collect();
    Some(SliceView {
        object: object.to_owned(),
        ports,
        endpoints,
    })
}

fn slice_port(
    index: usize,
    port: &EndpointPort,
    object: &str,
    problems: &mut Problems,
) -> Option<SlicePort> {
    let Some(protocol) = Protocol::from_k8s(port.protocol.as_deref()) else {
        let field = format!("ports[{index}].protocol");
        problems.push(
            object,
            ProblemCode::UnknownProtocol,
            protocol_problem(&field, port.protocol.as_deref()),
        );
        return None;
    };
    // An unset port means "all ports", which a Service port cannot use.
    let value = port.port?;
    let Some(number) = port_number(value) else {
        problems.push(
            object,
            ProblemCode::PortOutOfRange,
            format!("ports[{index}].port {value} is out of range 1-65535"),
        );
        return None;
    };
    Some(SlicePort {
        name: port.name.clone().unwrap_or_default(),
        protocol,
        port: number,
    })
}

fn slice_endpoint(
    index: usize,
    ep: &SliceEndpoint,
    object: &str,
    problems: &mut Problems,
) -> SliceEp {
    // The addresses of one endpoint are fungible; kube-proxy uses the first.
    // Only IPv4 slices are read (family.rs), so anything else is invalid here.
    let mut addrs = Vec::new();
    if let Some(text) = ep.address.as_deref() {
        match parse_addr(text) {
            Some(addr @ IpAddr::V4(_)) => {
                let field = format!("endpoints[{index}].addresses[0]");
                match check::endpoint(&field, addr) {
                    Verdict::Refuse(code, reason) => problems.push(object, code, reason),
                    Verdict::Warn(code, reason) => {
                        problems.warn(object, code, reason);
                        addrs.push(addr);
                    }
                    Verdict::Accept => addrs.push(addr),
                }
            }
            _ => problems.push(
                object,
                ProblemCode::InvalidAddress,
                format!("endpoints[{index}].addresses[0] \"{text}\" is not an IPv4 address"),
            ),
        }
    }
    let hints = ep.hints.as_deref();
    SliceEp {
        index,
        addrs,
        // Unset ready and unset serving count as true, as in kube-proxy.
        ready: ep.ready.unwrap_or(true),
        serving: ep.serving.unwrap_or(true),
        terminating: ep.terminating.unwrap_or(false),
        node_name: ep.node_name.as_deref().map(str::to_owned),
        target: ep.target.clone(),
        zone_hints: hints.map(|h| h.for_zones.clone()).unwrap_or_default(),
        node_hints: hints.map(|h| h.for_nodes.clone()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use crate::desired::test_support::*;

    #[test]
    fn cluster_ip_merges_slices() {
        let state = desired("clusterip.yaml", &node("node-a"));
        let svc = spn("shop", "web", "http", Tcp);
        let endpoints = [
            ep("10.244.1.3:8080", Tcp, true, Some("web-6d4cf56db6-fghij")),
            ep("10.244.2.7:8080", Tcp, false, Some("web-6d4cf56db6-abcde")),
            ep("10.244.3.4:8080", Tcp, false, Some("web-6d4cf56db6-klmno")),
        ];
        let expected = BTreeMap::from([(
            fe("10.96.0.10", 80, Tcp, Internal),
            spec(&svc, ClusterIp, &endpoints, Reject, "cluster: 3 ready"),
        )]);
        assert_eq!(state.frontends, expected);
        assert_eq!(state.problems, vec![]);
    }

    #[test]
    fn named_ports_match_by_name_and_protocol() {
        let state = desired("multiport.yaml", &node("node-a"));
        let ready = "cluster: 2 ready";
        let pods = |port: u16, protocol| {
            [
                ep(
                    &format!("10.244.1.70:{port}"),
                    protocol,
                    true,
                    Some("coredns-1"),
                ),
                ep(
                    &format!("10.244.2.70:{port}"),
                    protocol,
                    false,
                    Some("coredns-2"),
                ),
            ]
        };
        let expected = BTreeMap::from([
            (
                fe("10.96.0.60", 53, Tcp, Internal),
                spec(
                    &spn("multi", "dns", "dns-tcp", Tcp),
                    ClusterIp,
                    &pods(5353, Tcp),
                    Reject,
                    ready,
                ),
            ),
            (
                fe("10.96.0.60", 53, Udp, Internal),
                spec(
                    &spn("multi", "dns", "dns", Udp),
                    ClusterIp,
                    &pods(5353, Udp),
                    Reject,
                    ready,
                ),
            ),
            (
                fe("10.96.0.60", 9153, Tcp, Internal),
                spec(
                    &spn("multi", "dns", "metrics", Tcp),
                    ClusterIp,
                    &pods(9153, Tcp),
                    Reject,
                    ready,
                ),
            ),
        ]);
        assert_eq!(state.frontends, expected);
    }

    #[test]
    fn terminating_fallback_and_duplicate_addresses() {
        let state = desired("terminating.yaml", &node("node-a"));
        let drain = spn("term", "drain", "", Tcp);
        let dup = spn("term", "dup", "", Tcp);
        let expected = BTreeMap::from([
            (
                fe("10.96.0.50", 80, Tcp, Internal),
                spec(
                    &drain,
                    ClusterIp,
                    &[
                        terminating(ep("10.244.1.50:8080", Tcp, true, Some("drain-old-1"))),
                        // serving unset counts as serving (kube-proxy).
                        terminating(ep("10.244.2.52:8080", Tcp, false, None)),
                    ],
                    Reject,
                    "cluster: no ready endpoint, 2 serving+terminating",
                ),
            ),
            (
                fe("10.96.0.51", 80, Tcp, Internal),
                spec(
                    &dup,
                    ClusterIp,
                    &[
                        ep("10.244.1.60:8080", Tcp, true, Some("dup-fresh")),
                        ep("10.244.1.61:8080", Tcp, true, Some("dup-other")),
                    ],
                    Reject,
                    "cluster: 2 ready",
                ),
            ),
        ]);
        assert_eq!(state.frontends, expected);
    }

    #[test]
    fn slice_problems_are_reported_and_the_rest_used() {
        let text = "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-bad
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, port: 8080, protocol: QUIC}
- {name: http, port: 0}
- {name: http, port: 8080}
endpoints:
- addresses: [10.244.9.300, 10.244.9.9]
";
        let set = fixture("clusterip.yaml").merge(parse_documents("bad.yaml", text));
        let state = compute(&set.services, &set.slices, &node("node-a"));
        let object = "EndpointSlice shop/web-bad";
        assert_eq!(
            state.problems,
            vec![
                error(
                    ProblemCode::UnknownProtocol,
                    object,
                    "ports[0].protocol \"QUIC\" is not TCP, UDP or SCTP"
                ),
                error(
                    ProblemCode::PortOutOfRange,
                    object,
                    "ports[1].port 0 is out of range 1-65535"
                ),
                error(
                    ProblemCode::InvalidAddress,
                    object,
                    "endpoints[0].addresses[0] \"10.244.9.300\" is not an IPv4 address"
                ),
            ]
        );
        // The endpoint whose first address is invalid is skipped whole;
        // kube-proxy never looks past addresses[0].
        let web = &state.frontends[&fe("10.96.0.10", 80, Tcp, Internal)];
        assert_eq!(web.endpoints.len(), 3);
        assert!(
            web.endpoints
                .iter()
                .all(|e| e.backend.addr != Ipv4Addr::new(10, 244, 9, 9))
        );
    }
}
