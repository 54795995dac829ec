//! Services: each one read and checked into a [`ServiceView`] that holds
//! only what its frontends depend on.

use std::net::IpAddr;

use k8s_openapi::{
    api::core::v1::{Service, ServiceSpec},
    jiff::Timestamp,
};

use super::{
    addresses::{self as check},
    affinity,
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
        Some(ServiceView {
            affinity_timeout_s,
            created: svc.metadata.creation_timestamp.as_ref().map(|t| t.0),
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
mod tests {
    use crate::desired::test_support::*;

    /// cmd/kube-proxy/app/server.go's selector
    /// (`!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name`),
    /// and alternative proxies' `service-proxy-name=<ours>`.
    #[test]
    fn the_proxy_name_label_decides_whose_service_it_is() {
        let svc = |labels: &str| {
            let text = format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: w, labels: {{{labels}}}}}\nspec: {{clusterIP: 10.96.0.1, ports: [{{port: 80}}]}}\n"
            );
            parse_documents("w.yaml", &text).services.remove(0)
        };
        let why = |labels: &str, ours: Option<&str>| super::not_proxied_label(&svc(labels), ours);
        let theirs = "service.kubernetes.io/service-proxy-name: other";
        let headless = "service.kubernetes.io/headless: ''";
        assert_eq!(why("", None), None);
        assert_eq!(why(theirs, None), Some("labelled for another proxy"));
        assert_eq!(why(theirs, Some("other")), None);
        assert_eq!(why(theirs, Some("lb")), Some("labelled for another proxy"));
        assert!(why("", Some("lb")).is_some_and(|w| w.contains("--service-proxy-name")));
        assert_eq!(why(headless, None), Some("labelled headless"));
        let both = format!("{theirs}, {headless}");
        assert_eq!(why(&both, Some("other")), Some("labelled headless"));
    }

    /// `--service-proxy-name lb` (kube-proxy's selector
    /// `service.kubernetes.io/service-proxy-name=lb`): our labelled Service
    /// is served, an unlabelled one is not, and ours too are skipped when
    /// headless (`clusterIP: None`) or ExternalName, as kube-proxy's
    /// `ShouldSkipService` skips them.
    #[test]
    fn with_a_proxy_name_headless_and_external_name_services_are_still_skipped() {
        let ours = "labels: {service.kubernetes.io/service-proxy-name: lb}";
        let svc = |name: &str, labels: &str, spec: &str| {
            format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: p, {labels}}}\nspec: {{{spec}, ports: [{{port: 80}}]}}\n"
            )
        };
        let text = [
            svc("served", ours, "clusterIP: 10.96.0.71"),
            svc("unlabelled", "", "clusterIP: 10.96.0.72"),
            svc("headless", ours, "clusterIP: None"),
            svc("alias", ours, "type: ExternalName, externalName: db.example.com"),
        ]
        .concat();
        let set = parse_documents("p.yaml", &text);
        let rules = Rules {
            service_proxy_name: Some("lb".to_owned()),
            ..Rules::default()
        };
        let state = crate::desired::compute(
            &set.services,
            &set.slices,
            &node("node-a"),
            &rules,
            &Holders::default(),
        );
        let served: BTreeSet<String> = state
            .frontends
            .values()
            .map(|s| s.service.name.clone())
            .collect();
        assert_eq!(served, BTreeSet::from(["served".to_owned()]));
        assert_eq!(state.problems, vec![]);
    }

    /// kube-proxy's older `TestCategorizeEndpoints` cases read the hints
    /// annotation: "normal endpoint filtering, auto annotation" and "...,
    /// Auto annotation" filter; "hintsAnnotation empty, no filtering
    /// applied" and "hintsAnnotation disabled, no filtering applied" do not.
    #[test]
    fn topology_wish_from_annotations_and_traffic_distribution() {
        let wish = |metadata: &str, spec: &str| {
            let text = format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: w, {metadata}}}\nspec: {{clusterIP: 10.96.0.1, {spec} ports: [{{port: 80}}]}}\n"
            );
            let set = parse_documents("wish.yaml", &text);
            let svc = &set.services[0];
            let wish = super::topology_wish(svc, svc.spec.as_ref().expect("spec"));
            (wish.zone, wish.node)
        };
        let mode = |value: &str| {
            format!("annotations: {{service.kubernetes.io/topology-mode: \"{value}\"}}")
        };
        assert_eq!(wish(&mode("auto"), ""), (true, false));
        assert_eq!(wish(&mode("Auto"), ""), (true, false));
        assert_eq!(wish(&mode(""), ""), (false, false));
        assert_eq!(wish(&mode("disabled"), ""), (false, false));
        let hints = "annotations: {service.kubernetes.io/topology-aware-hints: auto}";
        assert_eq!(wish(hints, ""), (true, false));
        assert_eq!(wish("", ""), (false, false));
        for (distribution, expected) in [
            ("PreferClose", (true, false)),
            ("PreferSameZone", (true, false)),
            ("PreferSameNode", (true, true)),
            ("Elsewhere", (false, false)),
        ] {
            let spec = format!("trafficDistribution: {distribution},");
            assert_eq!(wish("", &spec), expected, "{distribution}");
        }
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

    /// Upstream: pkg/proxy/util's `IsVIPMode` (KEP-1860, LoadBalancerIPMode
    /// GA): `newBaseServiceInfo` keeps an ingress IP whose `ipMode` is unset
    /// or `VIP` and skips `Proxy`; any other value is no VIP either (and a
    /// problem here, as the API server would have refused it).
    #[test]
    fn ingress_ips_are_served_only_in_vip_mode_as_is_vip_mode_says() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: m, namespace: lb}\nspec: {type: LoadBalancer, clusterIP: 10.96.0.9, ports: [{port: 80, nodePort: 30009}]}\nstatus: {loadBalancer: {ingress: [{ip: 203.0.113.1}, {ip: 203.0.113.2, ipMode: VIP}, {ip: 203.0.113.3, ipMode: Proxy}, {ip: 203.0.113.4, ipMode: Bogus}]}}\n";
        let set = parse_documents("m.yaml", text);
        let state = compute(&set.services, &set.slices, &node("node-a"));
        let lb_ips: BTreeSet<String> = state
            .frontends
            .iter()
            .filter(|(_, s)| s.kind == LoadBalancer)
            .map(|(f, _)| f.addr.to_string())
            .collect();
        assert_eq!(
            lb_ips,
            BTreeSet::from(["203.0.113.1".to_owned(), "203.0.113.2".to_owned()])
        );
        assert_eq!(
            state.problems,
            vec![error(
                ProblemCode::InvalidValue,
                "Service lb/m",
                "status.loadBalancer.ingress[3].ipMode \"Bogus\" is not VIP or Proxy: that ingress IP is not served; set VIP (or leave it unset) for lb to serve it"
            )]
        );
    }

    #[test]
    fn services_kube_proxy_ignores_are_skipped_silently() {
        let state = desired("skipped.yaml", &node("node-a"));
        assert_eq!(state, DesiredState::default());
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
                warning(
                    ProblemCode::InvalidValue,
                    object,
                    "spec.type \"Weird\" is unknown; serving it as ClusterIP"
                ),
                warning(
                    ProblemCode::InvalidValue,
                    object,
                    "spec.externalTrafficPolicy \"Global\" is unknown; using Cluster"
                ),
                warning(
                    ProblemCode::InvalidValue,
                    object,
                    "spec.internalTrafficPolicy \"Nearby\" is unknown; using Cluster"
                ),
                warning(
                    ProblemCode::IgnoredField,
                    object,
                    "spec.ports[0].nodePort is set but the type has no NodePorts; ignored"
                ),
            ]
        );
        let frontends: Vec<String> = state.frontends.keys().map(|f| f.to_string()).collect();
        assert_eq!(frontends, vec!["10.96.0.140:80/TCP"]);
    }

    #[test]
    fn invalid_fields_skip_only_what_is_broken() {
        let state = desired("invalid.yaml", &node("node-a"));
        let object = "Service invalid/typo";
        assert_eq!(
            state.problems,
            vec![
                error(
                    ProblemCode::MissingField,
                    "Service invalid/nospec",
                    "has no spec"
                ),
                error(
                    ProblemCode::InvalidAddress,
                    object,
                    "spec.clusterIP \"10.96.0.300\" is not an IP address"
                ),
                error(
                    ProblemCode::InvalidAddress,
                    object,
                    "spec.externalIPs[0] \"198.51.100.300\" is not an IP address"
                ),
                error(
                    ProblemCode::PortOutOfRange,
                    object,
                    "spec.ports[1].port 70000 is out of range 1-65535"
                ),
                error(
                    ProblemCode::PortOutOfRange,
                    object,
                    "spec.ports[2].nodePort 0 is out of range 1-65535"
                ),
                error(
                    ProblemCode::UnknownProtocol,
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
}
