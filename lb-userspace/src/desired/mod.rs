//! The desired state: a pure function of Services, EndpointSlices and the
//! node's own facts, with kube-proxy's semantics (the checklist "kube-proxy
//! semantics we owe", section 4 of the design notes).
//!
//! `lb agent --dry-run` gets it from [`compute`] (through
//! `agent::sync::desired_state`), the agent's sync loop from
//! [`incremental::Tracker`], which a property test holds to [`compute`], so
//! what is applied and what the dry run prints do not disagree; `lb trace`
//! runs the live program over the maps those writes filled. Broken objects become
//! [`Problem`](crate::model::Problem)s and only the broken part is skipped:
//! one bad Service must not take the node's other Services down with it.
//!
//! IPv4 only for now: IPv6 addresses are valid and skipped, in `family.rs`.
//!
//! The rooms, in the order data flows, validation at the bottom:
//! `rules` (the cluster's settings), `validate` (field checks), `addresses`
//! (addresses that would capture traffic), `names` (what the maps hold),
//! `family` (what is served), `meta`, `problems`, `labels`; `slices`
//! (EndpointSlices merged per Service port); `endpoints` (kube-proxy's
//! `CategorizeEndpoints`) and `choice` (its sets in words); `ports` and
//! `services` (Service views) and `frontends` (their frontends); between
//! objects, where a newcomer never takes over from who serves now
//! (`holders`): `duplicates` (one namespace/name twice), `captures` (a
//! ClusterIP that is an endpoint address), `conflicts` (two Service ports
//! claiming one frontend); here, [`compute`]. The agent keeps the state
//! per changed Service instead (`incremental`, with [`compute`] as its
//! oracle); the dry run and the tests compute it whole.

mod addresses;
mod affinity;
mod algorithm;
mod captures;
mod choice;
mod conflicts;
mod duplicates;
mod endpoints;
mod family;
mod frontends;
mod health_checks;
mod holders;
pub mod incremental;
mod labels;
mod meta;
mod names;
mod ports;
mod problems;
mod rules;
mod services;
mod slices;
mod sloppy_ip;
mod source_ranges;
mod validate;

#[cfg(test)]
mod corpus;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::borrow::Borrow;

use k8s_openapi::api::core::v1::Service;

use crate::source::Slice;

pub use health_checks::{HealthCheck, ServiceRef, health_checks};
pub use holders::Holders;
pub use labels::{
    ANNOTATION_TOPOLOGY_HINTS, ANNOTATION_TOPOLOGY_MODE, LABEL_HEADLESS, LABEL_SERVICE_NAME,
    LABEL_SERVICE_PROXY_NAME,
};
pub use names::{MAX_NAME_BYTES, MAX_PORT_NAME_BYTES};
pub use rules::{Cidr, PortRange, RuleError, Rules};

use self::incremental::Footprint;
use self::{
    captures::separate_cluster_ips_from_endpoints, conflicts::resolve_conflicts,
    duplicates::one_per_name, meta::sorted_by_name, problems::Problems, services::ServiceView,
    slices::SliceIndex,
};
use crate::model::{DesiredState, NodeFacts};

/// Computes every frontend this node serves and the endpoints behind each.
///
/// Deterministic whatever the input order (a reflector's store has none):
/// Services and slices are visited sorted by namespace and name, and
/// problems come out in that order. `rules` are the cluster's settings
/// that decide what is valid; `holders` who serves each frontend now, so
/// that a newcomer never takes a frontend, a name or an address from a
/// Service that works (empty: the older object, then the name that sorts
/// first).
pub fn compute(
    services: &[impl Borrow<Service>],
    slices: &[impl Borrow<Slice>],
    node: &NodeFacts,
    rules: &Rules,
    holders: &Holders,
) -> DesiredState {
    compute_with_footprint(services, slices, node, rules, holders).0
}

/// [`compute`], plus what the result could collide on with other objects'
/// (the incremental tracker's input: `incremental::footprint`).
fn compute_with_footprint(
    services: &[impl Borrow<Service>],
    slices: &[impl Borrow<Slice>],
    node: &NodeFacts,
    rules: &Rules,
    holders: &Holders,
) -> (DesiredState, Footprint) {
    let mut problems = Problems::default();
    let mut slices = SliceIndex::build(slices, &mut problems);
    let views: Vec<ServiceView> = sorted_by_name(services, |s| &s.borrow().metadata)
        .into_iter()
        .filter_map(|svc| ServiceView::parse(svc.borrow(), rules, node, &mut problems))
        .collect();
    let mut footprint = Footprint {
        endpoint_addrs: slices.endpoint_addresses().into_iter().collect(),
        cluster_ips: views.iter().flat_map(|v| v.cluster_ips.clone()).collect(),
        several_definitions: views.len() > 1,
        ..Footprint::default()
    };
    let mut views = one_per_name(views, holders, node, &mut problems);
    separate_cluster_ips_from_endpoints(&mut views, &mut slices, holders, &mut problems);
    let mut claims = Vec::new();
    let mut service_ports = std::collections::BTreeMap::new();
    for view in &views {
        for port in &view.ports {
            let candidates = slices.candidates(&view.namespace, &view.name, &port.name, node);
            let (port_claims, info) = view.frontends(port, &candidates, node);
            claims.extend(port_claims);
            service_ports.insert(port.name.clone(), info);
        }
    }
    footprint.record_claims(claims.iter().map(|c| (c.frontend, &c.spec.service)));
    let frontends = resolve_conflicts(claims, holders, &mut problems);
    let state = DesiredState {
        frontends,
        services: service_ports,
        problems: problems.into_vec(),
    };
    (state, footprint)
}
