//! Builders shared by the desired-state tests, and the names they use.

use std::{net::SocketAddrV4, path::Path, sync::Arc};

use k8s_openapi::api::core::v1::Service;

use crate::source::Slice;

pub(super) use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

pub(super) use super::{Holders, Rules};
pub(super) use crate::{
    model::{
        Backend, DesiredState, Endpoint, Frontend, FrontendKind, FrontendSpec, NodeFacts, Problem,
        ProblemCode, Protocol, Scope, ServicePortInfo, ServicePortName, WhenEmpty,
    },
    source::manifests::{ManifestSet, load_dir, parse_documents},
};
pub(super) use FrontendKind::{ClusterIp, ExternalIp, LoadBalancer, NodePort};
pub(super) use Protocol::{Sctp, Tcp, Udp};
pub(super) use Scope::{External, Internal};
pub(super) use WhenEmpty::{Drop, Reject};

/// The desired state with the default rules and no current holders.
pub(super) fn compute(
    services: &[std::sync::Arc<Service>],
    slices: &[std::sync::Arc<Slice>],
    node: &NodeFacts,
) -> DesiredState {
    super::compute(
        services,
        slices,
        node,
        &Rules::default(),
        &Holders::default(),
    )
}

/// The frontends a state serves, as the holders a later computation sees.
pub(super) fn holders_of(state: &DesiredState) -> Holders {
    state
        .frontends
        .iter()
        .map(|(frontend, spec)| (*frontend, spec.service.clone()))
        .collect()
}

/// Which Service port serves each frontend, as `addr:port/PROTO scope owner`.
pub(super) fn owners(state: &DesiredState) -> Vec<String> {
    state
        .frontends
        .iter()
        .map(|(f, s)| format!("{f} {:?} {}", f.scope, s.service))
        .collect()
}

pub(super) fn fixtures_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub(super) fn fixture(name: &str) -> ManifestSet {
    let text = std::fs::read_to_string(fixtures_dir().join(name)).expect("fixture exists");
    parse_documents(name, &text)
}

pub(super) fn node(name: &str) -> NodeFacts {
    NodeFacts {
        name: name.to_owned(),
        addresses: vec![Ipv4Addr::new(192, 168, 1, 10).into()],
        zone: Some("zone-a".to_owned()),
    }
}

/// The desired state of a fixture that must itself load cleanly.
pub(super) fn desired(name: &str, node: &NodeFacts) -> DesiredState {
    let set = fixture(name);
    assert_eq!(set.problems, vec![], "fixture {name} loads cleanly");
    compute(&set.services, &set.slices, node)
}

pub(super) fn fe(addr: &str, port: u16, protocol: Protocol, scope: Scope) -> Frontend {
    Frontend {
        addr: addr.parse().expect("test address"),
        port,
        protocol,
        scope,
    }
}

pub(super) fn spn(
    namespace: &str,
    name: &str,
    port_name: &str,
    protocol: Protocol,
) -> ServicePortName {
    ServicePortName {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        port_name: port_name.to_owned(),
        protocol,
    }
}

/// An endpoint: "addr:port", protocol, local, target pod.
pub(super) fn ep(
    addr_port: &str,
    protocol: Protocol,
    local: bool,
    target: Option<&str>,
) -> Endpoint {
    let sock: SocketAddrV4 = addr_port.parse().expect("test socket address");
    Endpoint {
        backend: Backend {
            addr: IpAddr::V4(*sock.ip()),
            port: sock.port(),
            protocol,
        },
        terminating: false,
        local,
        remote: !local,
        target: target.map(Arc::from),
    }
}

pub(super) fn terminating(endpoint: Endpoint) -> Endpoint {
    Endpoint {
        terminating: true,
        ..endpoint
    }
}

pub(super) fn spec(
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
        affinity_timeout_s: 0,
        source_ranges: Vec::new(),
        algorithm: Default::default(),
    }
}

pub(super) fn error(code: ProblemCode, object: &str, reason: &str) -> Problem {
    Problem::error(object, code, reason)
}

pub(super) fn warning(code: ProblemCode, object: &str, reason: &str) -> Problem {
    Problem::warning(object, code, reason)
}
