//! The plan of a few changed Service ports: what the whole plan
//! (`diff::plan_whole`) would write for them, found through the kept
//! indexes (`index`, `usage`) instead of a walk over every Service. The
//! Service ports outside the scope are as the maps hold them already (the
//! previous plans made them so), so the whole plan would write nothing for
//! them but the backends they share with a changed port, whose flags the
//! scope's backends carry.
//!
//! The same per-port planning, the same write order, the same problems:
//! the property test in `planner`'s tests holds it to the whole plan.

use std::collections::{BTreeMap, BTreeSet};

use lb_common::Frontend4Key;

use super::{
    Applied, Plan,
    diff::{InUse, ServiceFrontends, plan_ports_of},
    index::identity_of,
    usage::Usage,
};
use crate::{
    datapath::codec::{backend_from_value, backend_value, frontend_from_key, frontend_key},
    model::{Backend, DesiredState, ServicePortName},
};

/// What a scoped plan visits.
pub(super) struct Scope<'a> {
    /// The Service ports to plan (changed, or not plannable last time).
    pub(super) services: BTreeSet<&'a ServicePortName>,
    /// Frontends that were or are in a changed part.
    pub(super) frontends: &'a BTreeSet<crate::model::Frontend>,
    /// Backends whose users changed: their flags may have.
    pub(super) backends: BTreeSet<Backend>,
}

/// The plan of the scope's Service ports, and those it could not plan.
pub(super) fn plan_scope(
    desired: &DesiredState,
    scope: &Scope<'_>,
    usage: &Usage,
    applied: &Applied,
    max_tables: u32,
) -> (Plan, Vec<ServicePortName>) {
    let ports = ports(desired, scope, usage);
    let mut wanted = BTreeMap::new();
    let endpoints = ports
        .iter()
        .flat_map(|(_, fes)| fes)
        .flat_map(|(_, spec)| &spec.endpoints);
    let listed = ports
        .iter()
        .flat_map(|(service, _)| super::diff::listed_of(desired, service))
        .map(|listed| &listed.backend);
    for backend in endpoints.map(|endpoint| &endpoint.backend).chain(listed) {
        if let Some(flags) = usage.flags(backend) {
            wanted.insert(*backend, flags);
        }
    }
    let mut planned = plan_ports_of(ports, wanted, desired, applied, max_tables);
    let keys = scope_keys(scope, usage, applied);
    let out = &mut planned.out;
    removals(&keys, desired, scope, usage, applied, &planned.in_use, out);
    shared_backend_flags(scope, usage, applied, out);
    planned.out.new_services = planned.ids.into_new_services();
    planned.out.purge_affinity = super::affinity_purge::affinity_purge(applied, &planned.out);
    let ids: BTreeSet<u32> = scope
        .services
        .iter()
        .filter_map(|s| applied.services.get(*s))
        .copied()
        .collect();
    let ports = super::source_ranges::Ports::These(&ids);
    super::source_ranges::plan_source_ranges(desired, applied, &mut planned.out, ports);
    super::service_cidrs::plan_cluster_ips(applied, &mut planned.out, false);
    (planned.out, planned.failed)
}

/// The scope's Service ports with their frontends, in the order of their
/// first frontend (the whole plan's order).
fn ports<'a>(
    desired: &'a DesiredState,
    scope: &Scope<'a>,
    usage: &'a Usage,
) -> Vec<(&'a ServicePortName, ServiceFrontends<'a>)> {
    let mut ports: Vec<(&ServicePortName, ServiceFrontends<'_>)> = scope
        .services
        .iter()
        .map(|service| {
            let frontends = usage
                .frontends_of(service)
                .iter()
                .filter_map(|frontend| desired.frontends.get_key_value(frontend))
                .collect();
            (*service, frontends)
        })
        .filter(|(_, frontends): &(_, ServiceFrontends<'_>)| !frontends.is_empty())
        .collect();
    ports.sort_by_key(|(_, frontends)| *frontends[0].0);
    ports
}

/// Every frontend key the scope may touch: the changed parts' frontends,
/// the scoped ports' frontends and the frontends carrying their ids.
fn scope_keys(scope: &Scope<'_>, usage: &Usage, applied: &Applied) -> BTreeSet<Frontend4Key> {
    let theirs = scope.services.iter().flat_map(|s| usage.frontends_of(s));
    let mut keys: BTreeSet<Frontend4Key> = scope
        .frontends
        .iter()
        .chain(theirs)
        .filter_map(|frontend| frontend_key(frontend).ok())
        .collect();
    for service in &scope.services {
        let carrying = applied
            .services
            .get(*service)
            .and_then(|id| applied.index.service_frontends.get(id));
        keys.extend(carrying.into_iter().flatten());
    }
    keys
}

/// What the scope's ports no longer reference and nothing outside the
/// scope does: frontends, then tables, backends and service ids.
fn removals(
    keys: &BTreeSet<Frontend4Key>,
    desired: &DesiredState,
    scope: &Scope<'_>,
    usage: &Usage,
    applied: &Applied,
    in_use: &InUse,
    out: &mut Plan,
) {
    let mut leaving: BTreeMap<u32, u32> = BTreeMap::new();
    let mut service_ids = BTreeSet::new();
    for key in keys {
        let Some(old) = applied.frontends.get(key) else {
            continue;
        };
        // A frontend an unchanged port serves stays its own.
        let owner = frontend_from_key(key).and_then(|fe| desired.frontends.get(&fe));
        if owner.is_some_and(|spec| !scope.services.contains(&spec.service)) {
            continue;
        }
        service_ids.insert(old.service_id);
        if old.backend_count > 0 {
            *leaving.entry(old.table_id).or_default() += 1;
        }
        if !in_use.frontends.contains(key) {
            out.remove_frontends.push(*key);
        }
    }
    let index = &applied.index;
    out.release_tables = leaving
        .iter()
        .filter(|(table, count)| {
            !in_use.tables.contains(table) && index.users_of_table(**table) == **count
        })
        .map(|(table, _)| *table)
        .collect();
    // The backends released tables named, and those tables rewritten in
    // place named before: each such table names them no more.
    let rewritten = out.write_tables.iter().map(|table| table.table_id);
    let mut named_by_released: BTreeMap<u32, u32> = BTreeMap::new();
    for table in out.release_tables.iter().copied().chain(rewritten) {
        for id in applied.table_backend_ids(table) {
            *named_by_released.entry(*id).or_default() += 1;
        }
    }
    // And the backends the scope's ports listed or chose before (their
    // users changed), named by no table the plan changes.
    for backend in &scope.backends {
        let id = identity_of(backend).and_then(|identity| index.backend_ids.get(&identity));
        if let Some(id) = id {
            named_by_released.entry(*id).or_default();
        }
    }
    for (id, count) in named_by_released {
        let listed_elsewhere = || {
            let value = applied.backends.get(&id);
            let backend = value.and_then(backend_from_value);
            backend.is_some_and(|b| usage.listed_outside(&b, &scope.services))
        };
        let still_used = in_use.planned_backends.contains(&id)
            || in_use.kept_backends.contains(&id)
            || index.tables_naming(id) > count
            || listed_elsewhere();
        let Some(value) = applied.backends.get(&id).filter(|_| !still_used) else {
            continue;
        };
        out.remove_backends.push((id, *value));
    }
    let scoped_ids = scope
        .services
        .iter()
        .filter_map(|s| applied.services.get(*s));
    service_ids.extend(scoped_ids);
    // An id goes when no frontend carries it after this plan: each one
    // carrying it now is removed or rewritten (with another id, as the
    // plan keeps no frontend with it).
    let removed: BTreeSet<&Frontend4Key> = out.remove_frontends.iter().collect();
    out.remove_services = service_ids
        .into_iter()
        .filter(|id| applied.service_infos.contains_key(id) && !in_use.services.contains(id))
        .filter(|id| {
            let mut carrying = index.service_frontends.get(id).into_iter().flatten();
            carrying.all(|key| removed.contains(key) || in_use.frontends.contains(key))
        })
        .collect();
}

/// Backends the scope's ports stopped using, or use with other flags, that
/// unchanged ports still use: their flags are now those of the others.
fn shared_backend_flags(scope: &Scope<'_>, usage: &Usage, applied: &Applied, out: &mut Plan) {
    let removed: BTreeSet<u32> = out.remove_backends.iter().map(|(id, _)| *id).collect();
    let written: BTreeSet<u32> = out.set_backends.iter().map(|(id, _)| *id).collect();
    for backend in &scope.backends {
        let (Some(flags), Some(identity)) = (usage.flags(backend), identity_of(backend)) else {
            continue;
        };
        let Some(id) = applied.index.backend_ids.get(&identity) else {
            continue;
        };
        let Ok(value) = backend_value(backend, flags) else {
            continue;
        };
        let unchanged = applied.backends.get(id) == Some(&value);
        if !removed.contains(id) && !written.contains(id) && !unchanged {
            out.set_backends.push((*id, value));
        }
    }
}
