//! The desired state: a pure function of Services, EndpointSlices and the
//! node's own facts, with kube-proxy's semantics (design.md section 4).
//!
//! The agent, the dry run and `lb trace` all call [`compute`], so what the
//! datapath does and what the operator is told can never disagree. Broken
//! objects become [`Problem`]s and only the broken part is skipped: one bad
//! Service must not take the node's other Services down with it.
//!
//! IPv4 only for now: IPv6 addresses are valid and skipped silently.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use k8s_openapi::api::{
    core::v1::{Service, ServicePort, ServiceSpec},
    discovery::v1::{Endpoint as SliceEndpoint, EndpointPort, EndpointSlice},
};

use crate::model::{
    Backend, DesiredState, Endpoint, Frontend, FrontendKind, FrontendSpec, NodeFacts, Problem,
    Protocol, Scope, ServicePortInfo, ServicePortName, WhenEmpty,
};

/// Services with this label belong to another proxy (kube-proxy's selector).
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Headless Services (set by the endpoints controllers) need no proxying.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Names the Service an EndpointSlice belongs to.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Topology Aware Routing, current spelling.
pub const ANNOTATION_TOPOLOGY_MODE: &str = "service.kubernetes.io/topology-mode";
/// Topology Aware Hints, the older spelling still honoured by kube-proxy.
pub const ANNOTATION_TOPOLOGY_HINTS: &str = "service.kubernetes.io/topology-aware-hints";

/// Computes every frontend this node serves and the endpoints behind each.
///
/// Deterministic whatever the input order (a reflector's store has none):
/// Services and slices are visited sorted by namespace and name, and
/// problems come out in that order.
pub fn compute(services: &[Service], slices: &[EndpointSlice], node: &NodeFacts) -> DesiredState {
    let mut problems = Problems::default();
    let slices = SliceIndex::build(slices, &mut problems);
    let mut claims = Vec::new();
    let mut service_ports = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for svc in sorted_by_name(services, |s| &s.metadata) {
        let Some(view) = ServiceView::parse(svc, &mut problems) else {
            continue;
        };
        if !seen.insert((view.namespace.clone(), view.name.clone())) {
            problems.push(
                &view.object,
                "defined more than once; the first definition is used",
            );
            continue;
        }
        for port in &view.ports {
            let candidates = slices.candidates(&view.namespace, &view.name, &port.name, node);
            let (port_claims, info) = view.frontends(port, &candidates, node);
            claims.extend(port_claims);
            service_ports.insert(port.name.clone(), info);
        }
    }
    let frontends = resolve_conflicts(claims, &mut problems);
    DesiredState {
        frontends,
        services: service_ports,
        problems: problems.into_vec(),
    }
}

fn sorted_by_name<T>(
    objects: &[T],
    meta: impl Fn(&T) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Vec<&T> {
    let mut sorted: Vec<&T> = objects.iter().collect();
    // Stable: of two objects with the same name, the first given stays first.
    sorted.sort_by(|a, b| {
        let (a, b) = (meta(a), meta(b));
        (namespace_of(&a.namespace), &a.name).cmp(&(namespace_of(&b.namespace), &b.name))
    });
    sorted
}

fn namespace_of(namespace: &Option<String>) -> &str {
    namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default")
}

/// Problems in the order found, each reported once.
#[derive(Default)]
struct Problems {
    list: Vec<Problem>,
    seen: BTreeSet<(String, String)>,
}

impl Problems {
    fn push(&mut self, object: &str, reason: impl Into<String>) {
        let reason = reason.into();
        if self.seen.insert((object.to_owned(), reason.clone())) {
            self.list.push(Problem {
                object: object.to_owned(),
                reason,
            });
        }
    }

    fn into_vec(self) -> Vec<Problem> {
        self.list
    }
}

/// How a string from the API parsed as an address.
enum Addr {
    V4(Ipv4Addr),
    /// Valid but not served yet.
    V6,
    Invalid,
}

fn parse_addr(text: &str) -> Addr {
    match text.trim().parse::<IpAddr>() {
        Ok(IpAddr::V4(addr)) => Addr::V4(addr),
        Ok(IpAddr::V6(_)) => Addr::V6,
        Err(_) => Addr::Invalid,
    }
}

/// A port number from the API, if it fits a `u16` and is not 0.
fn port_number(value: i32) -> Option<u16> {
    u16::try_from(value).ok().filter(|port| *port != 0)
}

fn protocol_problem(field: &str, value: Option<&str>) -> String {
    format!(
        "{field} \"{}\" is not TCP, UDP or SCTP",
        value.unwrap_or_default()
    )
}

// ---------------------------------------------------------------------------
// EndpointSlices

/// An endpoint of a slice, reduced to what endpoint choice needs.
#[derive(Clone, Debug)]
struct SliceEp {
    addrs: Vec<IpAddr>,
    ready: bool,
    serving: bool,
    terminating: bool,
    node_name: Option<String>,
    target: Option<String>,
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
    ports: Vec<SlicePort>,
    endpoints: Vec<SliceEp>,
}

/// The usable IPv4 slices, by (namespace, Service name), each service's
/// slices in name order (the order duplicates are resolved in).
#[derive(Default)]
struct SliceIndex {
    by_service: BTreeMap<(String, String), Vec<SliceView>>,
}

impl SliceIndex {
    fn build(slices: &[EndpointSlice], problems: &mut Problems) -> SliceIndex {
        let mut index = SliceIndex::default();
        for slice in sorted_by_name(slices, |s| &s.metadata) {
            let Some(service) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(LABEL_SERVICE_NAME))
            else {
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
                    .entry((namespace, service.clone()))
                    .or_default()
                    .push(view);
            }
        }
        index
    }

    /// The endpoints of one Service port, merged over its slices, one per
    /// backend. A later copy of an address replaces an earlier one unless it
    /// is terminating (a reused pod IP prefers the running pod), as
    /// kube-proxy does.
    fn candidates(
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

/// Reads one slice; `None` for slices of another address family.
fn slice_view(slice: &EndpointSlice, object: &str, problems: &mut Problems) -> Option<SliceView> {
    match slice.address_type.as_str() {
        "IPv4" => {}
        "IPv6" | "FQDN" => return None,
        "" => {
            problems.push(object, "addressType is missing");
            return None;
        }
        other => {
            problems.push(
                object,
                format!("addressType \"{other}\" is not IPv4, IPv6 or FQDN"),
            );
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
        .flatten()
        .enumerate()
        .map(|(i, ep)| slice_endpoint(i, ep, object, problems))
        .collect();
    Some(SliceView { ports, endpoints })
}

fn slice_port(
    index: usize,
    port: &EndpointPort,
    object: &str,
    problems: &mut Problems,
) -> Option<SlicePort> {
    let Some(protocol) = Protocol::from_k8s(port.protocol.as_deref()) else {
        let field = format!("ports[{index}].protocol");
        problems.push(object, protocol_problem(&field, port.protocol.as_deref()));
        return None;
    };
    // An unset port means "all ports", which a Service port cannot use.
    let value = port.port?;
    let Some(number) = port_number(value) else {
        problems.push(
            object,
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
    let mut addrs = Vec::new();
    if let Some(text) = ep.addresses.first() {
        match parse_addr(text) {
            Addr::V4(addr) => addrs.push(addr.into()),
            Addr::V6 | Addr::Invalid => problems.push(
                object,
                format!("endpoints[{index}].addresses[0] \"{text}\" is not an IPv4 address"),
            ),
        }
    }
    let conditions = ep.conditions.as_ref();
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let hints = ep.hints.as_ref();
    SliceEp {
        addrs,
        ready,
        // Unset serving counts as serving, as in kube-proxy.
        serving: conditions.and_then(|c| c.serving).unwrap_or(true),
        terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
        node_name: ep.node_name.clone(),
        target: ep.target_ref.as_ref().and_then(|t| t.name.clone()),
        zone_hints: hints
            .and_then(|h| h.for_zones.as_ref())
            .map(|zones| zones.iter().map(|z| z.name.clone()).collect())
            .unwrap_or_default(),
        node_hints: hints
            .and_then(|h| h.for_nodes.as_ref())
            .map(|nodes| nodes.iter().map(|n| n.name.clone()).collect())
            .unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------
// Endpoint choice (kube-proxy's CategorizeEndpoints)

/// One backend of a Service port with its conditions.
#[derive(Clone, Debug)]
struct Candidate {
    backend: Backend,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
    target: Option<String>,
    zone_hints: Vec<String>,
    node_hints: Vec<String>,
}

impl Candidate {
    fn new(backend: Backend, ep: &SliceEp, node: &NodeFacts) -> Candidate {
        Candidate {
            backend,
            ready: ep.ready,
            serving: ep.serving,
            terminating: ep.terminating,
            local: !node.name.is_empty() && ep.node_name.as_deref() == Some(node.name.as_str()),
            target: ep.target.clone(),
            zone_hints: ep.zone_hints.clone(),
            node_hints: ep.node_hints.clone(),
        }
    }

    /// kube-proxy's fallback when nothing is ready: still serving, going away.
    fn serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }

    fn endpoint(&self, fallback: bool) -> Endpoint {
        Endpoint {
            backend: self.backend,
            terminating: fallback,
            local: self.local,
            target: self.target.clone(),
        }
    }
}

/// The endpoint set a frontend uses, and why.
#[derive(Clone, Debug)]
struct Choice {
    endpoints: Vec<Endpoint>,
    when_empty: WhenEmpty,
    selection: String,
    /// Topology hints narrowed the endpoints.
    topology: bool,
}

impl Choice {
    fn new(
        picked: &[&Candidate],
        fallback: bool,
        when_empty: WhenEmpty,
        selection: String,
    ) -> Choice {
        let mut endpoints: Vec<Endpoint> = picked.iter().map(|c| c.endpoint(fallback)).collect();
        endpoints.sort();
        endpoints.dedup_by_key(|e| e.backend);
        Choice {
            endpoints,
            when_empty,
            selection,
            topology: false,
        }
    }

    fn with_note(&self, note: &str) -> Choice {
        Choice {
            selection: format!("{} ({note})", self.selection),
            ..self.clone()
        }
    }
}

/// Which topology hints a Service asked for.
#[derive(Clone, Copy, Debug, Default)]
struct TopologyWish {
    zone: bool,
    node: bool,
}

/// Hints in force for one Service port: filter by zone or by node name.
enum Hint<'a> {
    Zone(&'a str),
    Node(&'a str),
}

impl Hint<'_> {
    fn admits(&self, candidate: &Candidate) -> bool {
        match self {
            Hint::Zone(zone) => candidate.zone_hints.iter().any(|z| z == zone),
            Hint::Node(node) => candidate.node_hints.iter().any(|n| n == node),
        }
    }

    fn describe(&self) -> String {
        match self {
            Hint::Zone(zone) => format!("in zone {zone}"),
            Hint::Node(node) => format!("for node {node}"),
        }
    }
}

/// Hints apply all-or-nothing: only when every ready endpoint carries one
/// and at least one names this node's zone (or this node). A half-hinted
/// slice is mid-update, and trusting it could starve a zone.
fn topology_hint<'a>(
    wish: TopologyWish,
    ready: &[&Candidate],
    node: &'a NodeFacts,
) -> Option<Hint<'a>> {
    if ready.is_empty() {
        return None;
    }
    let usable = |hints: fn(&Candidate) -> &[String], target: &str| {
        ready.iter().all(|c| !hints(c).is_empty())
            && ready.iter().any(|c| hints(c).iter().any(|h| h == target))
    };
    if wish.node && !node.name.is_empty() && usable(|c| &c.node_hints, &node.name) {
        return Some(Hint::Node(&node.name));
    }
    let zone = node.zone.as_deref().filter(|z| !z.is_empty())?;
    (wish.zone && usable(|c| &c.zone_hints, zone)).then_some(Hint::Zone(zone))
}

/// Policy Cluster: ready endpoints (narrowed by topology hints), else the
/// serving and terminating ones, else nothing (reject).
fn cluster_choice(candidates: &[Candidate], wish: TopologyWish, node: &NodeFacts) -> Choice {
    let ready: Vec<&Candidate> = candidates.iter().filter(|c| c.ready).collect();
    if let Some(hint) = topology_hint(wish, &ready, node) {
        let picked: Vec<&Candidate> = ready.iter().copied().filter(|c| hint.admits(c)).collect();
        let selection = format!(
            "cluster: {} ready {} by topology hints (of {} ready)",
            picked.len(),
            hint.describe(),
            ready.len()
        );
        return Choice {
            topology: true,
            ..Choice::new(&picked, false, WhenEmpty::Reject, selection)
        };
    }
    if !ready.is_empty() {
        let selection = format!("cluster: {} ready", ready.len());
        return Choice::new(&ready, false, WhenEmpty::Reject, selection);
    }
    let fallback: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.serving_terminating())
        .collect();
    if !fallback.is_empty() {
        let selection = format!(
            "cluster: no ready endpoint, {} serving+terminating",
            fallback.len()
        );
        return Choice::new(&fallback, true, WhenEmpty::Reject, selection);
    }
    Choice::new(&[], false, WhenEmpty::Reject, "no endpoints".to_owned())
}

/// Policy Local (`policy` names which): this node's ready endpoints, else its
/// serving and terminating ones. With none, traffic is dropped when the
/// Service has endpoints elsewhere and rejected when it has none at all.
fn local_choice(
    policy: &str,
    candidates: &[Candidate],
    cluster: &Choice,
    node: &NodeFacts,
) -> Choice {
    let node_name = if node.name.is_empty() {
        "this node"
    } else {
        node.name.as_str()
    };
    let ready_total = candidates.iter().filter(|c| c.ready).count();
    let total = if ready_total > 0 {
        ready_total
    } else {
        candidates
            .iter()
            .filter(|c| c.serving_terminating())
            .count()
    };
    let local_ready: Vec<&Candidate> = candidates.iter().filter(|c| c.local && c.ready).collect();
    if !local_ready.is_empty() {
        let selection = format!(
            "{policy}=Local: {} ready on {node_name} (of {total})",
            local_ready.len()
        );
        return Choice::new(&local_ready, false, WhenEmpty::Drop, selection);
    }
    let local_fallback: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.local && c.serving_terminating())
        .collect();
    if !local_fallback.is_empty() {
        let selection = format!(
            "{policy}=Local: no ready endpoint on {node_name}, {} serving+terminating (of {total})",
            local_fallback.len()
        );
        return Choice::new(&local_fallback, true, WhenEmpty::Drop, selection);
    }
    if cluster.endpoints.is_empty() {
        return Choice::new(&[], false, WhenEmpty::Reject, "no endpoints".to_owned());
    }
    let selection = format!("{policy}=Local: no endpoint on {node_name} (of {total}), dropping");
    Choice::new(&[], false, WhenEmpty::Drop, selection)
}

// ---------------------------------------------------------------------------
// Services

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServiceType {
    ClusterIp,
    NodePort,
    LoadBalancer,
}

/// A Service port with its numbers checked.
#[derive(Debug)]
struct PortView {
    name: ServicePortName,
    port: u16,
    node_port: Option<u16>,
}

/// A Service reduced to what its frontends depend on, every field checked.
#[derive(Debug)]
struct ServiceView {
    object: String,
    namespace: String,
    name: String,
    etp_local: bool,
    itp_local: bool,
    cluster_ips: Vec<IpAddr>,
    external_ips: Vec<IpAddr>,
    lb_ips: Vec<IpAddr>,
    ports: Vec<PortView>,
    topology: TopologyWish,
}

/// A frontend claimed by a Service port, before conflicts are settled.
struct Claim {
    frontend: Frontend,
    spec: FrontendSpec,
    object: String,
}

impl ServiceView {
    /// `None` when the Service is not ours to proxy (skipped quietly) or is
    /// unusable as a whole (with a problem).
    fn parse(svc: &Service, problems: &mut Problems) -> Option<ServiceView> {
        let namespace = namespace_of(&svc.metadata.namespace).to_owned();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let object = format!("Service {namespace}/{name}");
        if let Some(why) = not_proxied_label(svc) {
            tracing::debug!(%object, why, "skipping service");
            return None;
        }
        if name.is_empty() {
            problems.push(&object, "has no metadata.name");
            return None;
        }
        let Some(spec) = svc.spec.as_ref() else {
            problems.push(&object, "has no spec");
            return None;
        };
        let svc_type = service_type(spec, &object, problems)?;
        let cluster_ips = cluster_ips(spec, &object, problems)?;
        let external_ips = addresses(
            indexed(
                "spec.externalIPs",
                spec.external_ips.as_deref().unwrap_or_default(),
            ),
            &object,
            problems,
        );
        let externally_accessible = svc_type != ServiceType::ClusterIp
            || !spec.external_ips.as_deref().unwrap_or_default().is_empty();
        let etp_local = local_policy(
            spec.external_traffic_policy.as_deref(),
            "spec.externalTrafficPolicy",
            &object,
            problems,
        ) && externally_accessible;
        let itp_local = local_policy(
            spec.internal_traffic_policy.as_deref(),
            "spec.internalTrafficPolicy",
            &object,
            problems,
        );
        let ports = spec
            .ports
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, port)| {
                port_view(i, port, svc_type, &namespace, &name, &object, problems)
            })
            .collect();
        Some(ServiceView {
            lb_ips: lb_ips(svc, &object, problems),
            topology: topology_wish(svc, spec),
            object,
            namespace,
            name,
            etp_local,
            itp_local,
            cluster_ips,
            external_ips,
            ports,
        })
    }

    /// Every frontend of one port, with the endpoint set each scope uses,
    /// and the facts that hold for the whole port.
    fn frontends(
        &self,
        port: &PortView,
        candidates: &[Candidate],
        node: &NodeFacts,
    ) -> (Vec<Claim>, ServicePortInfo) {
        let cluster = cluster_choice(candidates, self.topology, node);
        let info = ServicePortInfo {
            port: port.port,
            external_policy_local: self.etp_local,
            internal_policy_local: self.itp_local,
            topology_aware: cluster.topology,
        };
        let internal = if self.itp_local {
            local_choice("internalTrafficPolicy", candidates, &cluster, node)
        } else {
            cluster.clone()
        };
        let external = if self.etp_local {
            local_choice("externalTrafficPolicy", candidates, &cluster, node)
        } else {
            cluster.clone()
        };
        // Pods and the node itself reach every endpoint through external
        // addresses even under externalTrafficPolicy=Local, like kube-proxy.
        let internal_external = if self.etp_local {
            cluster.with_note("pods and the node bypass externalTrafficPolicy=Local")
        } else {
            cluster.clone()
        };
        let mut claims = Vec::new();
        let mut claim = |addr, number, scope, kind, choice: &Choice| {
            claims.push(self.claim(port, addr, number, scope, kind, choice));
        };
        for addr in &self.cluster_ips {
            claim(
                *addr,
                port.port,
                Scope::Internal,
                FrontendKind::ClusterIp,
                &internal,
            );
        }
        // IPv6 node addresses wait for the IPv6 datapath.
        let mut node_addrs: Vec<IpAddr> = node
            .addresses
            .iter()
            .copied()
            .filter(IpAddr::is_ipv4)
            .collect();
        node_addrs.sort();
        node_addrs.dedup();
        for (kind, number, addrs) in [
            (FrontendKind::NodePort, port.node_port, &node_addrs),
            (FrontendKind::LoadBalancer, Some(port.port), &self.lb_ips),
            (
                FrontendKind::ExternalIp,
                Some(port.port),
                &self.external_ips,
            ),
        ] {
            let Some(number) = number else { continue };
            for addr in addrs {
                claim(*addr, number, Scope::External, kind, &external);
                claim(*addr, number, Scope::Internal, kind, &internal_external);
            }
        }
        (claims, info)
    }

    fn claim(
        &self,
        port: &PortView,
        addr: IpAddr,
        number: u16,
        scope: Scope,
        kind: FrontendKind,
        choice: &Choice,
    ) -> Claim {
        Claim {
            frontend: Frontend {
                addr,
                port: number,
                protocol: port.name.protocol,
                scope,
            },
            spec: FrontendSpec {
                service: port.name.clone(),
                kind,
                endpoints: choice.endpoints.clone(),
                when_empty: choice.when_empty,
                selection: choice.selection.clone(),
            },
            object: self.object.clone(),
        }
    }
}

/// Why kube-proxy's watch selector would not even see this Service.
fn not_proxied_label(svc: &Service) -> Option<&'static str> {
    let labels = svc.metadata.labels.as_ref()?;
    if labels.contains_key(LABEL_SERVICE_PROXY_NAME) {
        Some("labelled for another proxy")
    } else if labels.contains_key(LABEL_HEADLESS) {
        Some("labelled headless")
    } else {
        None
    }
}

/// The type, or `None` for ExternalName (a DNS alias, nothing to proxy).
/// An unknown type still gets its cluster IPs served.
fn service_type(spec: &ServiceSpec, object: &str, problems: &mut Problems) -> Option<ServiceType> {
    match spec.type_.as_deref().unwrap_or("ClusterIP") {
        "ClusterIP" | "" => Some(ServiceType::ClusterIp),
        "NodePort" => Some(ServiceType::NodePort),
        "LoadBalancer" => Some(ServiceType::LoadBalancer),
        "ExternalName" => None,
        other => {
            problems.push(
                object,
                format!("spec.type \"{other}\" is unknown; serving it as ClusterIP"),
            );
            Some(ServiceType::ClusterIp)
        }
    }
}

/// Whether a traffic policy is Local; anything unknown counts as Cluster,
/// as in kube-proxy, with a problem so the typo gets noticed.
fn local_policy(value: Option<&str>, field: &str, object: &str, problems: &mut Problems) -> bool {
    match value.unwrap_or("Cluster") {
        "Local" => true,
        "Cluster" | "" => false,
        other => {
            problems.push(
                object,
                format!("{field} \"{other}\" is unknown; using Cluster"),
            );
            false
        }
    }
}

/// The IPv4 cluster IPs; `None` for a headless Service and for one that has
/// cluster IPs but no IPv4 one (kube-proxy's IPv4 proxier ignores those
/// Services entirely, NodePorts included).
fn cluster_ips(spec: &ServiceSpec, object: &str, problems: &mut Problems) -> Option<Vec<IpAddr>> {
    let fields: Vec<(String, &str)> = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => indexed("spec.clusterIPs", ips),
        _ => spec
            .cluster_ip
            .iter()
            .filter(|ip| !ip.is_empty())
            .map(|ip| ("spec.clusterIP".to_owned(), ip.as_str()))
            .collect(),
    };
    if fields.iter().any(|(_, ip)| *ip == "None") {
        tracing::debug!(%object, "skipping headless service");
        return None;
    }
    let any_v6 = fields
        .iter()
        .any(|(_, ip)| matches!(parse_addr(ip), Addr::V6));
    let v4 = addresses(fields, object, problems);
    if v4.is_empty() && any_v6 {
        tracing::debug!(%object, "skipping IPv6-only service");
        return None;
    }
    Some(v4)
}

/// Each entry of a list field with its name ("spec.externalIPs[1]").
fn indexed<'a>(field: &str, values: &'a [String]) -> Vec<(String, &'a str)> {
    values
        .iter()
        .enumerate()
        .map(|(i, value)| (format!("{field}[{i}]"), value.as_str()))
        .collect()
}

/// The IPv4 addresses among named field values; invalid entries become
/// problems naming the field, IPv6 ones are skipped. Sorted, deduplicated.
fn addresses(fields: Vec<(String, &str)>, object: &str, problems: &mut Problems) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for (field, text) in fields {
        match parse_addr(text) {
            Addr::V4(addr) => out.push(addr.into()),
            Addr::V6 => {}
            Addr::Invalid => {
                problems.push(object, format!("{field} \"{text}\" is not an IP address"))
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// LoadBalancer ingress IPs, except `ipMode: Proxy` ones: there the load
/// balancer proxies and traffic arrives for the node, not for the VIP.
fn lb_ips(svc: &Service, object: &str, problems: &mut Problems) -> Vec<IpAddr> {
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    let fields = ingress
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, entry)| entry.ip_mode.as_deref() != Some("Proxy"))
        .filter_map(|(i, entry)| {
            // Hostname-only entries (some cloud load balancers) have no IP.
            let ip = entry.ip.as_deref().filter(|ip| !ip.is_empty())?;
            Some((format!("status.loadBalancer.ingress[{i}].ip"), ip))
        })
        .collect();
    addresses(fields, object, problems)
}

fn topology_wish(svc: &Service, spec: &ServiceSpec) -> TopologyWish {
    let annotation = |key: &str| {
        svc.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .is_some_and(|v| v.eq_ignore_ascii_case("auto"))
    };
    let distribution = spec.traffic_distribution.as_deref();
    // PreferSameZone is PreferClose's newer name; PreferSameNode falls back
    // to zone hints, which the EndpointSlice controller also sets.
    let zone_distribution = matches!(
        distribution,
        Some("PreferClose" | "PreferSameZone" | "PreferSameNode")
    );
    TopologyWish {
        zone: annotation(ANNOTATION_TOPOLOGY_MODE)
            || annotation(ANNOTATION_TOPOLOGY_HINTS)
            || zone_distribution,
        node: distribution == Some("PreferSameNode"),
    }
}

/// One Service port, or `None` (with a problem) when it cannot be served.
fn port_view(
    index: usize,
    port: &ServicePort,
    svc_type: ServiceType,
    namespace: &str,
    name: &str,
    object: &str,
    problems: &mut Problems,
) -> Option<PortView> {
    let Some(protocol) = Protocol::from_k8s(port.protocol.as_deref()) else {
        let field = format!("spec.ports[{index}].protocol");
        problems.push(object, protocol_problem(&field, port.protocol.as_deref()));
        return None;
    };
    let Some(number) = port_number(port.port) else {
        // The API types read a missing port as 0.
        let reason = match port.port {
            0 => format!("spec.ports[{index}].port is missing or 0"),
            other => format!("spec.ports[{index}].port {other} is out of range 1-65535"),
        };
        problems.push(object, reason);
        return None;
    };
    Some(PortView {
        name: ServicePortName {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            port_name: port.name.clone().unwrap_or_default(),
            protocol,
        },
        port: number,
        node_port: node_port(index, port, svc_type, object, problems),
    })
}

/// The port's nodePort, when its type has NodePorts. kube-proxy serves any
/// nodePort that is set, so a LoadBalancer with
/// `allocateLoadBalancerNodePorts: false` has NodePorts only where one was
/// given explicitly.
fn node_port(
    index: usize,
    port: &ServicePort,
    svc_type: ServiceType,
    object: &str,
    problems: &mut Problems,
) -> Option<u16> {
    let value = port.node_port?;
    if svc_type == ServiceType::ClusterIp {
        problems.push(
            object,
            format!("spec.ports[{index}].nodePort is set but the type has no NodePorts; ignored"),
        );
        return None;
    }
    let number = port_number(value);
    if number.is_none() {
        problems.push(
            object,
            format!("spec.ports[{index}].nodePort {value} is out of range 1-65535"),
        );
    }
    number
}

// ---------------------------------------------------------------------------
// Conflicts

/// One owner per frontend: the Service port whose name sorts first keeps it,
/// the others get a problem. The same Service port claiming one frontend
/// twice (a clusterIP also listed as an externalIP) is no conflict; the
/// first kind (ClusterIP, NodePort, LoadBalancer, externalIP) wins.
fn resolve_conflicts(
    mut claims: Vec<Claim>,
    problems: &mut Problems,
) -> BTreeMap<Frontend, FrontendSpec> {
    claims.sort_by(|a, b| {
        (a.frontend, &a.spec.service, a.spec.kind).cmp(&(b.frontend, &b.spec.service, b.spec.kind))
    });
    let mut frontends: BTreeMap<Frontend, FrontendSpec> = BTreeMap::new();
    for claim in claims {
        match frontends.get(&claim.frontend) {
            None => {
                frontends.insert(claim.frontend, claim.spec);
            }
            Some(kept) if kept.service == claim.spec.service => {
                tracing::debug!(frontend = %claim.frontend, service = %kept.service, "frontend claimed twice by one service port");
            }
            Some(kept) => problems.push(
                &claim.object,
                format!(
                    "frontend {} already used by {}",
                    claim.frontend, kept.service
                ),
            ),
        }
    }
    frontends
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddrV4, path::Path};

    use super::*;
    use crate::source::manifests::{ManifestSet, load_dir, parse_documents};

    use FrontendKind::{ClusterIp, ExternalIp, LoadBalancer, NodePort};
    use Protocol::{Sctp, Tcp, Udp};
    use Scope::{External, Internal};
    use WhenEmpty::{Drop, Reject};

    fn fixtures_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    fn fixture(name: &str) -> ManifestSet {
        let text = std::fs::read_to_string(fixtures_dir().join(name)).expect("fixture exists");
        parse_documents(name, &text)
    }

    fn node(name: &str) -> NodeFacts {
        NodeFacts {
            name: name.to_owned(),
            addresses: vec![Ipv4Addr::new(192, 168, 1, 10).into()],
            zone: Some("zone-a".to_owned()),
        }
    }

    /// The desired state of a fixture that must itself load cleanly.
    fn desired(name: &str, node: &NodeFacts) -> DesiredState {
        let set = fixture(name);
        assert_eq!(set.problems, vec![], "fixture {name} loads cleanly");
        compute(&set.services, &set.slices, node)
    }

    fn fe(addr: &str, port: u16, protocol: Protocol, scope: Scope) -> Frontend {
        Frontend {
            addr: addr.parse().expect("test address"),
            port,
            protocol,
            scope,
        }
    }

    fn spn(namespace: &str, name: &str, port_name: &str, protocol: Protocol) -> ServicePortName {
        ServicePortName {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            port_name: port_name.to_owned(),
            protocol,
        }
    }

    /// An endpoint: "addr:port", protocol, local, target pod.
    fn ep(addr_port: &str, protocol: Protocol, local: bool, target: Option<&str>) -> Endpoint {
        let sock: SocketAddrV4 = addr_port.parse().expect("test socket address");
        Endpoint {
            backend: Backend {
                addr: IpAddr::V4(*sock.ip()),
                port: sock.port(),
                protocol,
            },
            terminating: false,
            local,
            target: target.map(str::to_owned),
        }
    }

    fn terminating(endpoint: Endpoint) -> Endpoint {
        Endpoint {
            terminating: true,
            ..endpoint
        }
    }

    fn spec(
        service: &ServicePortName,
        kind: FrontendKind,
        endpoints: &[Endpoint],
        when_empty: WhenEmpty,
        selection: &str,
    ) -> FrontendSpec {
        FrontendSpec {
            service: service.clone(),
            kind,
            endpoints: endpoints.to_vec(),
            when_empty,
            selection: selection.to_owned(),
        }
    }

    fn problem(object: &str, reason: &str) -> Problem {
        Problem {
            object: object.to_owned(),
            reason: reason.to_owned(),
        }
    }

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
    fn node_port_with_external_policy_local() {
        let state = desired("nodeport-local.yaml", &node("node-a"));
        let svc = spn("np", "api", "", Tcp);
        let local = ep("10.244.1.5:8080", Tcp, true, Some("api-a"));
        let all = [
            local.clone(),
            ep("10.244.2.5:8080", Tcp, false, Some("api-b1")),
            ep("10.244.2.6:8080", Tcp, false, Some("api-b2")),
        ];
        let expected = BTreeMap::from([
            (
                fe("10.96.0.20", 80, Tcp, Internal),
                spec(&svc, ClusterIp, &all, Reject, "cluster: 3 ready"),
            ),
            (
                fe("192.168.1.10", 30080, Tcp, External),
                spec(
                    &svc,
                    NodePort,
                    &[local],
                    Drop,
                    "externalTrafficPolicy=Local: 1 ready on node-a (of 3)",
                ),
            ),
            (
                fe("192.168.1.10", 30080, Tcp, Internal),
                spec(
                    &svc,
                    NodePort,
                    &all,
                    Reject,
                    "cluster: 3 ready (pods and the node bypass externalTrafficPolicy=Local)",
                ),
            ),
        ]);
        assert_eq!(state.frontends, expected);
        assert_eq!(
            state.services[&svc],
            ServicePortInfo {
                port: 80,
                external_policy_local: true,
                internal_policy_local: false,
                topology_aware: false,
            }
        );
    }

    #[test]
    fn node_port_local_without_local_endpoint_drops_external_only() {
        let state = desired("nodeport-local.yaml", &node("node-c"));
        let external = &state.frontends[&fe("192.168.1.10", 30080, Tcp, External)];
        assert_eq!(external.endpoints, vec![]);
        assert_eq!(external.when_empty, Drop);
        assert_eq!(
            external.selection,
            "externalTrafficPolicy=Local: no endpoint on node-c (of 3), dropping"
        );
        let internal = &state.frontends[&fe("192.168.1.10", 30080, Tcp, Internal)];
        assert_eq!(internal.endpoints.len(), 3);
        assert!(internal.endpoints.iter().all(|e| !e.local));
    }

    #[test]
    fn node_ports_on_every_node_address() {
        let mut facts = node("node-a");
        facts.addresses = vec![
            Ipv4Addr::new(10, 0, 0, 5).into(),
            Ipv4Addr::new(192, 168, 1, 10).into(),
            Ipv4Addr::new(10, 0, 0, 5).into(),
        ];
        let state = desired("nodeport-local.yaml", &facts);
        let node_ports: Vec<Frontend> = state
            .frontends
            .iter()
            .filter(|(_, s)| s.kind == NodePort)
            .map(|(f, _)| *f)
            .collect();
        assert_eq!(
            node_ports,
            vec![
                fe("10.0.0.5", 30080, Tcp, External),
                fe("10.0.0.5", 30080, Tcp, Internal),
                fe("192.168.1.10", 30080, Tcp, External),
                fe("192.168.1.10", 30080, Tcp, Internal),
            ]
        );
    }

    #[test]
    fn load_balancer_skips_proxy_mode_ingress() {
        let state = desired("loadbalancer.yaml", &node("node-a"));
        let edge = spn("lb", "edge", "https", Tcp);
        let direct = spn("lb", "direct", "https", Tcp);
        let backend = [ep("10.244.2.30:8443", Tcp, false, None)];
        let ready = "cluster: 1 ready";
        let expected = BTreeMap::from([
            (
                fe("10.96.0.30", 443, Tcp, Internal),
                spec(&edge, ClusterIp, &backend, Reject, ready),
            ),
            (
                fe("10.96.0.31", 443, Tcp, Internal),
                spec(&direct, ClusterIp, &[], Reject, "no endpoints"),
            ),
            (
                fe("192.168.1.10", 30443, Tcp, External),
                spec(&edge, NodePort, &backend, Reject, ready),
            ),
            (
                fe("192.168.1.10", 30443, Tcp, Internal),
                spec(&edge, NodePort, &backend, Reject, ready),
            ),
            (
                fe("203.0.113.10", 443, Tcp, External),
                spec(&edge, LoadBalancer, &backend, Reject, ready),
            ),
            (
                fe("203.0.113.10", 443, Tcp, Internal),
                spec(&edge, LoadBalancer, &backend, Reject, ready),
            ),
            (
                fe("203.0.113.20", 443, Tcp, External),
                spec(&direct, LoadBalancer, &[], Reject, "no endpoints"),
            ),
            (
                fe("203.0.113.20", 443, Tcp, Internal),
                spec(&direct, LoadBalancer, &[], Reject, "no endpoints"),
            ),
        ]);
        assert_eq!(state.frontends, expected);
    }

    #[test]
    fn external_ips_follow_external_policy() {
        let state = desired("externalips.yaml", &node("node-a"));
        let svc = spn("ext", "legacy", "tcp", Tcp);
        let local = ep("10.244.1.40:7000", Tcp, true, Some("legacy-0"));
        let all = [
            local.clone(),
            ep("10.244.2.40:7000", Tcp, false, Some("legacy-1")),
        ];
        let expected = BTreeMap::from([
            (
                fe("10.96.0.40", 7000, Tcp, Internal),
                spec(&svc, ClusterIp, &all, Reject, "cluster: 2 ready"),
            ),
            (
                fe("198.51.100.7", 7000, Tcp, External),
                spec(
                    &svc,
                    ExternalIp,
                    &[local],
                    Drop,
                    "externalTrafficPolicy=Local: 1 ready on node-a (of 2)",
                ),
            ),
            (
                fe("198.51.100.7", 7000, Tcp, Internal),
                spec(
                    &svc,
                    ExternalIp,
                    &all,
                    Reject,
                    "cluster: 2 ready (pods and the node bypass externalTrafficPolicy=Local)",
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
    fn services_kube_proxy_ignores_are_skipped_silently() {
        let state = desired("skipped.yaml", &node("node-a"));
        assert_eq!(state, DesiredState::default());
    }

    #[test]
    fn internal_policy_local() {
        let svc = spn("itp", "agent", "", Udp);
        let state = desired("itp-local.yaml", &node("node-a"));
        let expected = BTreeMap::from([(
            fe("10.96.0.80", 8125, Udp, Internal),
            spec(
                &svc,
                ClusterIp,
                &[ep("10.244.1.80:8125", Udp, true, Some("agent-node-a"))],
                Drop,
                "internalTrafficPolicy=Local: 1 ready on node-a (of 2)",
            ),
        )]);
        assert_eq!(state.frontends, expected);

        let state = desired("itp-local.yaml", &node("node-c"));
        let expected = BTreeMap::from([(
            fe("10.96.0.80", 8125, Udp, Internal),
            spec(
                &svc,
                ClusterIp,
                &[],
                Drop,
                "internalTrafficPolicy=Local: no endpoint on node-c (of 2), dropping",
            ),
        )]);
        assert_eq!(state.frontends, expected);
    }

    #[test]
    fn local_policy_without_any_endpoint_rejects() {
        let mut set = fixture("itp-local.yaml");
        set.slices.clear();
        let state = compute(&set.services, &set.slices, &node("node-a"));
        let only = state.frontends.values().next().expect("one frontend");
        assert_eq!(only.when_empty, Reject);
        assert_eq!(only.selection, "no endpoints");
    }

    #[test]
    fn local_policy_falls_back_to_local_serving_terminating() {
        let mut set = fixture("itp-local.yaml");
        let endpoints = set.slices[0].endpoints.as_mut().expect("endpoints");
        for endpoint in endpoints.iter_mut() {
            endpoint.conditions = Some(k8s_openapi::api::discovery::v1::EndpointConditions {
                ready: Some(false),
                serving: Some(true),
                terminating: Some(true),
            });
        }
        let state = compute(&set.services, &set.slices, &node("node-a"));
        let only = state.frontends.values().next().expect("one frontend");
        assert_eq!(
            only.endpoints,
            vec![terminating(ep(
                "10.244.1.80:8125",
                Udp,
                true,
                Some("agent-node-a")
            ))]
        );
        assert_eq!(only.when_empty, Drop);
        assert_eq!(
            only.selection,
            "internalTrafficPolicy=Local: no ready endpoint on node-a, 1 serving+terminating (of 2)"
        );
    }

    #[test]
    fn topology_hints_all_or_nothing() {
        let state = desired("topology.yaml", &node("node-a"));
        let zoned = &state.frontends[&fe("10.96.0.90", 80, Tcp, Internal)];
        assert_eq!(
            zoned.endpoints,
            vec![
                ep("10.244.1.90:80", Tcp, true, None),
                ep("10.244.4.90:80", Tcp, false, None)
            ]
        );
        assert_eq!(
            zoned.selection,
            "cluster: 2 ready in zone zone-a by topology hints (of 3 ready)"
        );
        // The port's facts record that hints applied, and only where they did.
        let topology = |name: &str| {
            let key = state.services.keys().find(|k| k.name == name).unwrap();
            state.services[key].topology_aware
        };
        assert!(topology(&zoned.service.name));
        let unhinted = &state.frontends[&fe("10.96.0.91", 80, Tcp, Internal)]
            .service
            .name;
        assert!(!topology(unhinted));
        for (addr, count) in [("10.96.0.91", 2), ("10.96.0.92", 1), ("10.96.0.93", 2)] {
            let spec = &state.frontends[&fe(addr, 80, Tcp, Internal)];
            assert_eq!(spec.endpoints.len(), count, "{addr}");
            assert_eq!(spec.selection, format!("cluster: {count} ready"), "{addr}");
        }
    }

    #[test]
    fn topology_hints_need_a_node_zone() {
        let mut facts = node("node-a");
        facts.zone = None;
        let state = desired("topology.yaml", &facts);
        let zoned = &state.frontends[&fe("10.96.0.90", 80, Tcp, Internal)];
        assert_eq!(zoned.endpoints.len(), 3);
    }

    #[test]
    fn node_hints_for_prefer_same_node() {
        let text = "apiVersion: v1
kind: Service
metadata: {name: near, namespace: topo}
spec:
  clusterIP: 10.96.0.95
  trafficDistribution: PreferSameNode
  ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: near-1
  namespace: topo
  labels: {kubernetes.io/service-name: near}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- addresses: [10.244.1.95]
  nodeName: node-a
  hints: {forNodes: [{name: node-a}], forZones: [{name: zone-a}]}
- addresses: [10.244.4.95]
  nodeName: node-d
  hints: {forNodes: [{name: node-d}], forZones: [{name: zone-a}]}
";
        let set = parse_documents("near.yaml", text);
        let on_a = compute(&set.services, &set.slices, &node("node-a"));
        let spec = &on_a.frontends[&fe("10.96.0.95", 80, Tcp, Internal)];
        assert_eq!(spec.endpoints, vec![ep("10.244.1.95:80", Tcp, true, None)]);
        assert_eq!(
            spec.selection,
            "cluster: 1 ready for node node-a by topology hints (of 2 ready)"
        );
        // No node hint for node-x: the zone hints still apply (both zone-a).
        let on_x = compute(&set.services, &set.slices, &node("node-x"));
        let spec = &on_x.frontends[&fe("10.96.0.95", 80, Tcp, Internal)];
        assert_eq!(spec.endpoints.len(), 2);
        assert_eq!(
            spec.selection,
            "cluster: 2 ready in zone zone-a by topology hints (of 2 ready)"
        );
    }

    #[test]
    fn unknown_type_and_policies_are_problems_with_safe_defaults() {
        let text = "apiVersion: v1
kind: Service
metadata: {name: odd, namespace: x}
spec:
  type: Weird
  clusterIP: 10.96.0.140
  externalTrafficPolicy: Global
  internalTrafficPolicy: Nearby
  ports: [{port: 80, nodePort: 30140}]
";
        let set = parse_documents("odd.yaml", text);
        let state = compute(&set.services, &set.slices, &node("node-a"));
        let object = "Service x/odd";
        assert_eq!(
            state.problems,
            vec![
                problem(
                    object,
                    "spec.type \"Weird\" is unknown; serving it as ClusterIP"
                ),
                problem(
                    object,
                    "spec.externalTrafficPolicy \"Global\" is unknown; using Cluster"
                ),
                problem(
                    object,
                    "spec.internalTrafficPolicy \"Nearby\" is unknown; using Cluster"
                ),
                problem(
                    object,
                    "spec.ports[0].nodePort is set but the type has no NodePorts; ignored"
                ),
            ]
        );
        let frontends: Vec<String> = state.frontends.keys().map(|f| f.to_string()).collect();
        assert_eq!(frontends, vec!["10.96.0.140:80/TCP"]);
    }

    #[test]
    fn malformed_document_does_not_hide_the_others() {
        let set = fixture("malformed.yaml");
        assert_eq!(set.problems.len(), 1);
        assert_eq!(set.problems[0].object, "malformed.yaml (document 2)");
        assert!(
            set.problems[0].reason.starts_with("invalid YAML: "),
            "{}",
            set.problems[0].reason
        );
        let state = compute(&set.services, &set.slices, &node("node-a"));
        let addrs: Vec<String> = state.frontends.keys().map(|f| f.to_string()).collect();
        assert_eq!(addrs, vec!["10.96.0.100:80/TCP", "10.96.0.102:80/TCP"]);
    }

    #[test]
    fn invalid_fields_skip_only_what_is_broken() {
        let state = desired("invalid.yaml", &node("node-a"));
        let object = "Service invalid/typo";
        assert_eq!(
            state.problems,
            vec![
                problem("Service invalid/nospec", "has no spec"),
                problem(
                    object,
                    "spec.clusterIP \"10.96.0.300\" is not an IP address"
                ),
                problem(
                    object,
                    "spec.externalIPs[0] \"198.51.100.300\" is not an IP address"
                ),
                problem(object, "spec.ports[1].port 70000 is out of range 1-65535"),
                problem(object, "spec.ports[2].nodePort 0 is out of range 1-65535"),
                problem(
                    object,
                    "spec.ports[4].protocol \"QUIC\" is not TCP, UDP or SCTP"
                ),
            ]
        );
        let frontends: Vec<(String, Scope, FrontendKind, String)> = state
            .frontends
            .iter()
            .map(|(f, s)| (f.to_string(), f.scope, s.kind, s.service.to_string()))
            .collect();
        let row = |f: &str, scope, kind, svc: &str| (f.to_owned(), scope, kind, svc.to_owned());
        assert_eq!(
            frontends,
            vec![
                row("10.96.0.110:80/TCP", Internal, ClusterIp, "invalid/fine:"),
                row(
                    "192.168.1.10:30110/TCP",
                    External,
                    NodePort,
                    "invalid/typo:http"
                ),
                row(
                    "192.168.1.10:30110/TCP",
                    Internal,
                    NodePort,
                    "invalid/typo:http"
                ),
                row(
                    "192.168.1.10:30111/SCTP",
                    External,
                    NodePort,
                    "invalid/typo:sctp"
                ),
                row(
                    "192.168.1.10:30111/SCTP",
                    Internal,
                    NodePort,
                    "invalid/typo:sctp"
                ),
                row(
                    "198.51.100.8:80/TCP",
                    External,
                    ExternalIp,
                    "invalid/typo:http"
                ),
                row(
                    "198.51.100.8:80/TCP",
                    Internal,
                    ExternalIp,
                    "invalid/typo:http"
                ),
                row(
                    "198.51.100.8:81/TCP",
                    External,
                    ExternalIp,
                    "invalid/typo:bad-node-port"
                ),
                row(
                    "198.51.100.8:81/TCP",
                    Internal,
                    ExternalIp,
                    "invalid/typo:bad-node-port"
                ),
                row(
                    "198.51.100.8:82/SCTP",
                    External,
                    ExternalIp,
                    "invalid/typo:sctp"
                ),
                row(
                    "198.51.100.8:82/SCTP",
                    Internal,
                    ExternalIp,
                    "invalid/typo:sctp"
                ),
            ]
        );
        assert!(state.frontends.values().any(|s| s.service.protocol == Sctp));
    }

    #[test]
    fn frontend_conflict_keeps_first_service_port() {
        let state = desired("conflict.yaml", &node("node-a"));
        assert_eq!(
            state.problems,
            vec![problem(
                "Service conflict/b",
                "frontend 192.0.2.10:80/TCP already used by conflict/a:http"
            )]
        );
        let owners: Vec<(String, Scope, String)> = state
            .frontends
            .iter()
            .map(|(f, s)| (f.to_string(), f.scope, s.service.to_string()))
            .collect();
        let row = |f: &str, scope, svc: &str| (f.to_owned(), scope, svc.to_owned());
        assert_eq!(
            owners,
            vec![
                row("10.96.0.120:80/TCP", Internal, "conflict/a:http"),
                row("10.96.0.121:80/TCP", Internal, "conflict/b:web"),
                row("192.0.2.10:80/TCP", External, "conflict/a:http"),
                row("192.0.2.10:80/TCP", Internal, "conflict/a:http"),
            ]
        );
    }

    #[test]
    fn same_service_port_twice_on_one_frontend_is_no_conflict() {
        let text = "apiVersion: v1
kind: Service
metadata: {name: twice}
spec:
  clusterIP: 10.96.0.130
  externalIPs: [10.96.0.130]
  ports: [{port: 80}]
";
        let set = parse_documents("twice.yaml", text);
        let state = compute(&set.services, &set.slices, &node("node-a"));
        assert_eq!(state.problems, vec![]);
        let kinds: Vec<(Scope, FrontendKind)> = state
            .frontends
            .iter()
            .map(|(f, s)| (f.scope, s.kind))
            .collect();
        assert_eq!(kinds, vec![(External, ExternalIp), (Internal, ClusterIp)]);
    }

    #[test]
    fn duplicate_service_definition_is_a_problem() {
        let mut set = fixture("clusterip.yaml");
        let first = set.services[0].clone();
        set.services.push(first);
        let state = compute(&set.services, &set.slices, &node("node-a"));
        assert_eq!(
            state.problems,
            vec![problem(
                "Service shop/web",
                "defined more than once; the first definition is used"
            )]
        );
        assert_eq!(state.frontends.len(), 1);
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
                problem(object, "ports[0].protocol \"QUIC\" is not TCP, UDP or SCTP"),
                problem(object, "ports[1].port 0 is out of range 1-65535"),
                problem(
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

    #[test]
    fn independent_of_input_order() {
        let set = load_dir(&fixtures_dir()).expect("the fixture directory is readable");
        let facts = node("node-a");
        let forward = compute(&set.services, &set.slices, &facts);
        let mut services = set.services.clone();
        let mut slices = set.slices.clone();
        services.reverse();
        slices.reverse();
        assert_eq!(compute(&services, &slices, &facts), forward);
    }

    /// The whole fixture directory at once: the fixtures use distinct
    /// namespaces and addresses, so only their deliberate problems appear.
    #[test]
    fn whole_fixture_directory() {
        let set = load_dir(&fixtures_dir()).expect("the fixture directory is readable");
        let load_problems: Vec<&str> = set.problems.iter().map(|p| p.object.as_str()).collect();
        assert_eq!(load_problems, vec!["malformed.yaml (document 2)"]);
        let state = compute(&set.services, &set.slices, &node("node-a"));
        let objects: BTreeSet<&str> = state.problems.iter().map(|p| p.object.as_str()).collect();
        assert_eq!(
            objects,
            BTreeSet::from([
                "Service conflict/b",
                "Service invalid/nospec",
                "Service invalid/typo"
            ])
        );
        assert_eq!(state.frontends.len(), 42);
    }
}
