//! The Services whose `healthCheckNodePort` this node answers, with the
//! count the answer carries: kube-proxy's `NeedsHealthCheck` (type
//! LoadBalancer with `externalTrafficPolicy: Local`) and its
//! `EndpointsMap.LocalReadyEndpoints` (pkg/proxy/endpointsmap.go: the
//! distinct addresses of this node's ready endpoints over every port of
//! the Service; terminating ones do not count, so a node that only drains
//! fails the check). The agent's `service_health` serves them.

use std::{
    borrow::Borrow,
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use k8s_openapi::api::core::v1::Service;

use crate::source::Slice;

use super::{meta::namespace_of, rules::Rules, services::not_proxied_label, validate::parse_addr};
use crate::model::NodeFacts;

/// A Service by namespace and name (kube-proxy's `NamespacedName`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One health-check port and what it reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub port: u16,
    /// This node's ready endpoints of the Service (distinct addresses).
    pub local_endpoints: usize,
}

/// Every Service this node answers a health check for. Of two definitions
/// of one namespace/name the first is used, as everywhere else.
pub fn health_checks(
    services: &[impl Borrow<Service>],
    slices: &[impl Borrow<Slice>],
    node: &NodeFacts,
    rules: &Rules,
) -> BTreeMap<ServiceRef, HealthCheck> {
    let mut checks = BTreeMap::new();
    for svc in services.iter().map(Borrow::borrow) {
        let Some(port) = health_check_port(svc, rules) else {
            continue;
        };
        let service = ServiceRef {
            namespace: namespace_of(&svc.metadata.namespace).to_owned(),
            name: svc.metadata.name.clone().unwrap_or_default(),
        };
        checks.entry(service).or_insert(HealthCheck {
            port,
            local_endpoints: 0,
        });
    }
    if checks.is_empty() {
        return checks;
    }
    let mut ready: BTreeMap<&ServiceRef, BTreeSet<IpAddr>> = BTreeMap::new();
    for slice in slices.iter().map(Borrow::borrow) {
        let Some(service) = slice_service(slice, &checks) else {
            continue;
        };
        let addrs = ready.entry(service).or_default();
        addrs.extend(local_ready_addresses(slice, &node.name));
    }
    let counts: Vec<(ServiceRef, usize)> = ready
        .into_iter()
        .map(|(service, addrs)| (service.clone(), addrs.len()))
        .collect();
    for (service, count) in counts {
        if let Some(check) = checks.get_mut(&service) {
            check.local_endpoints = count;
        }
    }
    checks
}

/// `NeedsHealthCheck`, and the port the API server allocated for it; a
/// Service kube-proxy's selector would not see has none.
fn health_check_port(svc: &Service, rules: &Rules) -> Option<u16> {
    let spec = svc.spec.as_ref()?;
    let needs = spec.type_.as_deref() == Some("LoadBalancer")
        && spec.external_traffic_policy.as_deref() == Some("Local");
    if !needs || not_proxied_label(svc, rules.service_proxy_name.as_deref()).is_some() {
        return None;
    }
    u16::try_from(spec.health_check_node_port?)
        .ok()
        .filter(|port| *port != 0)
}

/// The checked Service an IPv4 slice belongs to.
fn slice_service<'a>(
    slice: &Slice,
    checks: &'a BTreeMap<ServiceRef, HealthCheck>,
) -> Option<&'a ServiceRef> {
    if slice.address_type != "IPv4" {
        return None;
    }
    let name = slice.service_name()?;
    let service = ServiceRef {
        namespace: namespace_of(&slice.metadata.namespace).to_owned(),
        name: name.to_owned(),
    };
    checks.get_key_value(&service).map(|(key, _)| key)
}

/// The first address of each ready endpoint on `node` (kube-proxy reads
/// only `addresses[0]`; ready unset counts as ready).
fn local_ready_addresses<'a>(slice: &'a Slice, node: &'a str) -> impl Iterator<Item = IpAddr> + 'a {
    slice.endpoints.iter().filter_map(move |ep| {
        let ready = ep.ready.unwrap_or(true);
        let local = ep.node_name.as_deref() == Some(node);
        if !(ready && local) {
            return None;
        }
        ep.address.as_deref().and_then(parse_addr)
    })
}

#[cfg(test)]
mod tests;
