//! The desired state: a pure function of Services, EndpointSlices and the
//! node's own facts, with kube-proxy's semantics (the checklist "kube-proxy
//! semantics we owe", section 4 of the design notes).
//!
//! The agent's sync loop and `lb agent --dry-run` both get it from
//! [`compute`] (through `agent::desired_from_manifests`), so what is applied
//! and what the dry run prints can never disagree; `lb trace` runs the
//! live program over the maps those writes filled. Broken objects become
//! [`Problem`](crate::model::Problem)s and only the broken part is skipped:
//! one bad Service must not take the node's other Services down with it.
//!
//! IPv4 only for now: IPv6 addresses are valid and skipped, in `family.rs`.
//!
//! The rooms, in the order data flows, validation at the bottom:
//! `validate` (field checks), `family` (what is served), `meta`, `problems`,
//! `labels`; `slices` (EndpointSlices merged per Service port); `endpoints`
//! (kube-proxy's `CategorizeEndpoints`) and `choice` (its sets in words);
//! `services` (Service views) and `frontends` (their frontends);
//! `conflicts` (two objects claiming one frontend); here, [`compute`].

mod choice;
mod conflicts;
mod endpoints;
mod family;
mod frontends;
mod labels;
mod meta;
mod problems;
mod services;
mod slices;
mod validate;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

pub use labels::{
    ANNOTATION_TOPOLOGY_HINTS, ANNOTATION_TOPOLOGY_MODE, LABEL_HEADLESS, LABEL_SERVICE_NAME,
    LABEL_SERVICE_PROXY_NAME,
};

use self::{
    conflicts::resolve_conflicts, meta::sorted_by_name, problems::Problems, services::ServiceView,
    slices::SliceIndex,
};
use crate::model::{DesiredState, NodeFacts, ProblemCode};

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
                ProblemCode::DuplicateObject,
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
