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
        svc(
            "alias",
            ours,
            "type: ExternalName, externalName: db.example.com",
        ),
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
    let mode =
        |value: &str| format!("annotations: {{service.kubernetes.io/topology-mode: \"{value}\"}}");
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
