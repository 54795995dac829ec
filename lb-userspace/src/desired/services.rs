//! Services: each one read and checked into a [`ServiceView`] that holds
//! only what its frontends depend on.

use std::net::IpAddr;

use k8s_openapi::{
    api::core::v1::{Service, ServiceSpec},
    jiff::Timestamp,
};

use super::{
    addresses::{self as check},
    affinity, algorithm,
    endpoints::TopologyWish,
    family,
    labels::{
        ANNOTATION_TOPOLOGY_HINTS, ANNOTATION_TOPOLOGY_MODE, LABEL_HEADLESS,
        LABEL_SERVICE_PROXY_NAME,
    },
    meta::namespace_of,
    names,
    ports::{Owner, PortView, ServiceType, port_views},
    problems::Problems,
    rules::Rules,
    source_ranges,
    validate::{addresses, indexed, parse_addr},
};
use crate::model::{NodeFacts, ProblemCode};

/// A Service reduced to what its frontends depend on, every field checked.
#[derive(Debug)]
pub(super) struct ServiceView {
    pub(super) object: String,
    pub(super) namespace: String,
    pub(super) name: String,
    /// `metadata.creationTimestamp`: of two claims, the older one wins.
    pub(super) created: Option<Timestamp>,
    pub(super) etp_local: bool,
    pub(super) itp_local: bool,
    pub(super) cluster_ips: Vec<IpAddr>,
    pub(super) external_ips: Vec<IpAddr>,
    pub(super) lb_ips: Vec<IpAddr>,
    pub(super) ports: Vec<PortView>,
    pub(super) topology: TopologyWish,
    /// ClientIP session affinity timeout in seconds; 0: none.
    pub(super) affinity_timeout_s: u32,
    /// Sources allowed to the LoadBalancer IPs; empty: all.
    pub(super) source_ranges: Vec<crate::model::SourceRange>,
    /// `lb.kubernetes.io/algorithm`.
    pub(super) algorithm: crate::model::Algorithm,
}

impl ServiceView {
    /// `None` when the Service is not ours to proxy (skipped quietly) or is
    /// unusable as a whole (with a problem).
    pub(super) fn parse(
        svc: &Service,
        rules: &Rules,
        node: &NodeFacts,
        problems: &mut Problems,
    ) -> Option<ServiceView> {
        let namespace = namespace_of(&svc.metadata.namespace).to_owned();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let object = format!("Service {namespace}/{name}");
        if let Some(why) = not_proxied_label(svc, rules.service_proxy_name.as_deref()) {
            tracing::debug!(%object, why, "skipping service");
            return None;
        }
        if name.is_empty() {
            problems.push(&object, ProblemCode::MissingField, "has no metadata.name");
            return None;
        }
        let too_long = names::check_name("metadata.namespace", &namespace)
            .and_then(|()| names::check_name("metadata.name", &name));
        if let Err(reason) = too_long {
            problems.push(&object, ProblemCode::NameTooLong, reason);
            return None;
        }
        let Some(spec) = svc.spec.as_ref() else {
            problems.push(&object, ProblemCode::MissingField, "has no spec");
            return None;
        };
        let svc_type = service_type(spec, &object, problems)?;
        let cluster_ips = cluster_ips(spec, rules, &object, problems)?;
        let external_ips = addresses(
            indexed(
                "spec.externalIPs",
                spec.external_ips.as_deref().unwrap_or_default(),
            ),
            &object,
            problems,
            |field, addr| check::external_ip(field, addr, rules, node),
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
        let owner = Owner {
            namespace: &namespace,
            name: &name,
            object: &object,
            svc_type,
        };
        let ports = port_views(
            spec.ports.as_deref().unwrap_or_default(),
            &owner,
            rules,
            problems,
        );
        let affinity_timeout_s = affinity::client_ip_timeout(spec, &object, problems);
        let algorithm = algorithm::algorithm(svc, &object, problems);
        let lb_ips = lb_ips(svc, &object, problems);
        let is_load_balancer = svc_type == ServiceType::LoadBalancer;
        let source_ranges = source_ranges::allowed_sources(
            spec,
            is_load_balancer,
            &lb_ips,
            node,
            &object,
            problems,
        );
        Some(ServiceView {
            algorithm,
            affinity_timeout_s,
            source_ranges,
            created: svc.metadata.creation_timestamp.as_ref().map(|t| t.0),
            lb_ips,
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
}

/// Why kube-proxy's watch selector would not even see this Service (the
/// cluster source's selector says the same: source/cluster/selectors.rs).
pub(super) fn not_proxied_label(svc: &Service, proxy_name: Option<&str>) -> Option<&'static str> {
    let labels = svc.metadata.labels.as_ref();
    let label = |key| labels.and_then(|l| l.get(key)).map(String::as_str);
    if label(LABEL_HEADLESS).is_some() {
        return Some("labelled headless");
    }
    match (label(LABEL_SERVICE_PROXY_NAME), proxy_name) {
        (None, None) => None,
        (Some(theirs), Some(ours)) if theirs == ours => None,
        (Some(_), _) => Some("labelled for another proxy"),
        (None, Some(_)) => Some("not labelled for this proxy (--service-proxy-name)"),
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
            problems.warn(
                object,
                ProblemCode::InvalidValue,
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
            problems.warn(
                object,
                ProblemCode::InvalidValue,
                format!("{field} \"{other}\" is unknown; using Cluster"),
            );
            false
        }
    }
}

/// The served cluster IPs; `None` for a headless Service and for one whose
/// cluster IPs are all of a family not served (kube-proxy's IPv4 proxier
/// ignores IPv6-only Services entirely, NodePorts included).
fn cluster_ips(
    spec: &ServiceSpec,
    rules: &Rules,
    object: &str,
    problems: &mut Problems,
) -> Option<Vec<IpAddr>> {
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
    let any_unserved = fields
        .iter()
        .any(|(_, ip)| parse_addr(ip).is_some_and(|addr| !family::is_served(addr)));
    let served = addresses(fields, object, problems, |field, addr| {
        check::cluster_ip(field, addr, rules)
    });
    if served.is_empty() && any_unserved {
        tracing::debug!(%object, "skipping IPv6-only service");
        return None;
    }
    Some(served)
}

/// LoadBalancer ingress IPs in VIP mode only (kube-proxy's `IsVIPMode`:
/// `ipMode` unset or `VIP`, KEP-1860): with `Proxy` the load balancer
/// proxies and traffic arrives for the node, not for the VIP. Any other
/// value is refused (the API server would have), and kube-proxy does not
/// serve it either.
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
        .filter(|(i, entry)| match entry.ip_mode.as_deref() {
            None | Some("VIP") => true,
            Some("Proxy") => false,
            Some(other) => {
                problems.push(
                    object,
                    ProblemCode::InvalidValue,
                    format!(
                        "status.loadBalancer.ingress[{i}].ipMode \"{other}\" is not VIP or Proxy: that ingress IP is not served; set VIP (or leave it unset) for lb to serve it"
                    ),
                );
                false
            }
        })
        .filter_map(|(i, entry)| {
            // Hostname-only entries (some cloud load balancers) have no IP.
            let ip = entry.ip.as_deref().filter(|ip| !ip.is_empty())?;
            Some((format!("status.loadBalancer.ingress[{i}].ip"), ip))
        })
        .collect();
    addresses(fields, object, problems, check::load_balancer_ip)
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

#[cfg(test)]
mod tests;
