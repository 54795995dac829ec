//! The plan itself: a pure function of the desired state and what the maps
//! hold. Each Service port is planned on its own, so one that cannot be
//! planned becomes a problem, keeps what it had, and stalls nothing else.

use std::collections::{BTreeMap, BTreeSet};

use foldhash::HashSet;

use lb_common::{Backend4, Frontend4Key, FrontendValue};

use super::{
    Applied, Plan, PlanError, TableWrite,
    ids::{Ids, Mark},
    masquerade,
    tables::{FrontendSet, port_tables},
};
use crate::{
    datapath::codec::{
        BackendFlags, FrontendEntry, backend_identity, backend_value, frontend_key, frontend_value,
    },
    model::{Backend, DesiredState, Frontend, FrontendSpec, ServicePortName},
};

/// Each wanted backend's id and map value, or why it has none.
type BackendIds = BTreeMap<Backend, Result<(u32, Backend4), PlanError>>;

/// The frontends of one Service port, in the desired state's order.
pub(super) type ServiceFrontends<'a> = Vec<(&'a Frontend, &'a FrontendSpec)>;

/// What the plan keeps: everything else the maps hold is removed. Only
/// asked whether it holds an id or a key, never in order: hash sets
/// (foldhash), which a full sync fills with 100,000 backends and 20,000
/// frontends faster than B-trees.
#[derive(Default)]
pub(super) struct InUse {
    pub(super) frontends: HashSet<Frontend4Key>,
    pub(super) services: HashSet<u32>,
    pub(super) tables: HashSet<u32>,
    /// Backends the planned frontends select (written when changed).
    pub(super) planned_backends: HashSet<u32>,
    /// Backends that frontends kept as they were still select.
    pub(super) kept_backends: HashSet<u32>,
}

/// The writes of one Service port, added to the plan only when the whole
/// port could be planned.
struct ServicePart {
    service_id: u32,
    info: Option<lb_common::ServiceInfo>,
    tables: Vec<TableWrite>,
    tables_used: BTreeSet<u32>,
    backends_used: BTreeSet<u32>,
    frontends: Vec<(Frontend4Key, FrontendValue)>,
}

/// Computes the plan. Pure: reads only its arguments.
pub fn plan(desired: &DesiredState, applied: &Applied, max_tables: u32) -> Plan {
    plan_whole(desired, applied, max_tables).0
}

/// The plan of the whole desired state, and the Service ports it could
/// not plan (kept as they were, each a problem of the plan).
pub(super) fn plan_whole(
    desired: &DesiredState,
    applied: &Applied,
    max_tables: u32,
) -> (Plan, Vec<ServicePortName>) {
    let ports = by_service(desired);
    let wanted = wanted_backends(desired, &ports);
    let mut planned = plan_ports_of(ports, wanted, desired, applied, max_tables);
    removals(applied, &planned.in_use, &mut planned.out);
    planned.out.new_services = planned.ids.into_new_services();
    planned.out.purge_affinity = super::affinity_purge::affinity_purge(applied, &planned.out);
    let all = super::source_ranges::Ports::All;
    super::source_ranges::plan_source_ranges(desired, applied, &mut planned.out, all);
    super::service_cidrs::plan_cluster_ips(applied, &mut planned.out, true);
    (planned.out, planned.failed)
}

/// The writes of some Service ports, before the removals.
pub(super) struct Planned<'a> {
    pub(super) ids: Ids<'a>,
    pub(super) out: Plan,
    pub(super) in_use: InUse,
    /// The ports that could not be planned.
    pub(super) failed: Vec<ServicePortName>,
}

/// Plans `ports`, whose endpoints' backends (with their flags) are
/// `wanted`: ids, tables, frontends, service entries and changed backends.
pub(super) fn plan_ports_of<'a>(
    ports: Vec<(&ServicePortName, ServiceFrontends<'_>)>,
    wanted: BTreeMap<Backend, BackendFlags>,
    desired: &DesiredState,
    applied: &'a Applied,
    max_tables: u32,
) -> Planned<'a> {
    let mut ids = Ids::new(applied, max_tables);
    let backend_ids = assign_backend_ids(wanted, applied, &mut ids);
    let mut out = Plan::default();
    let mut in_use = InUse::default();
    let failed = plan_ports(
        ports,
        desired,
        applied,
        &backend_ids,
        &mut ids,
        &mut out,
        &mut in_use,
    );
    out.set_backends = changed_backends(&backend_ids, applied, &in_use);
    Planned {
        ids,
        out,
        in_use,
        failed,
    }
}

/// Plans each Service port on its own, in order; returns those that could
/// not be planned, which keep what they have.
fn plan_ports<'a>(
    ports: Vec<(&'a ServicePortName, ServiceFrontends<'a>)>,
    desired: &DesiredState,
    applied: &Applied,
    backend_ids: &BackendIds,
    ids: &mut Ids<'_>,
    out: &mut Plan,
    in_use: &mut InUse,
) -> Vec<ServicePortName> {
    let mut failed = Vec::new();
    for (service, frontends) in ports {
        let mark: Mark = ids.mark();
        match plan_service(service, &frontends, desired, applied, backend_ids, ids) {
            Ok(part) => add_part(part, applied, out, in_use),
            Err(err) => {
                ids.undo(mark);
                failed.push((service, frontends, err));
            }
        }
    }
    // After every plannable port has claimed its frontends: a frontend that
    // moved to another Service goes to it.
    let mut names = Vec::new();
    for (service, frontends, err) in failed {
        let kept = super::unplannable::keep_serving(service, &frontends, applied, in_use);
        out.problems
            .push(super::unplannable::problem(service, &err, kept));
        names.push(service.clone());
    }
    names
}

/// The planned backends whose map value is new or changed.
fn changed_backends(
    backend_ids: &BackendIds,
    applied: &Applied,
    in_use: &InUse,
) -> Vec<(u32, Backend4)> {
    backend_ids
        .values()
        .filter_map(|result| result.as_ref().ok())
        .filter(|(id, value)| {
            in_use.planned_backends.contains(id) && applied.backends.get(id) != Some(value)
        })
        .copied()
        .collect()
}

/// Groups frontends by Service port, ports in the order of their first
/// frontend (found by hash: a full sync groups 20,000 frontends, and a
/// B-tree compared their names' strings a dozen times each).
fn by_service(desired: &DesiredState) -> Vec<(&ServicePortName, ServiceFrontends<'_>)> {
    let mut groups: Vec<(&ServicePortName, ServiceFrontends<'_>)> = Vec::new();
    let mut index: foldhash::HashMap<&ServicePortName, usize> = foldhash::HashMap::default();
    for (frontend, spec) in &desired.frontends {
        let at = *index.entry(&spec.service).or_insert_with(|| {
            groups.push((&spec.service, Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push((frontend, spec));
    }
    groups
}

/// Every backend any frontend uses, with its flags (a flag holds if it
/// holds for every frontend using the backend), and every backend the
/// `ports` list (the default flags where no frontend uses it).
fn wanted_backends(
    desired: &DesiredState,
    ports: &[(&ServicePortName, ServiceFrontends<'_>)],
) -> BTreeMap<Backend, BackendFlags> {
    let mut wanted: BTreeMap<Backend, BackendFlags> = BTreeMap::new();
    for endpoint in desired.frontends.values().flat_map(|spec| &spec.endpoints) {
        let flags = BackendFlags {
            terminating: endpoint.terminating,
            local: endpoint.local,
            remote: endpoint.remote,
        };
        wanted
            .entry(endpoint.backend)
            .and_modify(|f| *f = f.both(flags))
            .or_insert(flags);
    }
    for listed in ports
        .iter()
        .flat_map(|(service, _)| listed_of(desired, service))
    {
        wanted.entry(listed.backend).or_default();
    }
    wanted
}

/// The endpoints a Service port's EndpointSlices list.
pub(super) fn listed_of<'a>(
    desired: &'a DesiredState,
    service: &ServicePortName,
) -> &'a [crate::model::Listed] {
    desired
        .services
        .get(service)
        .map_or(&[], |port| port.listed.as_slice())
}

/// Each wanted backend's id: the one the maps have for it, else a new one.
fn assign_backend_ids(
    wanted: BTreeMap<Backend, BackendFlags>,
    applied: &Applied,
    ids: &mut Ids,
) -> BackendIds {
    let known = &applied.index.backend_ids;
    wanted
        .into_iter()
        .map(|(backend, flags)| {
            let result = backend_value(&backend, flags)
                .map_err(PlanError::from)
                .and_then(|value| {
                    let id = match known.get(&backend_identity(&value)) {
                        Some(id) => *id,
                        None => ids.next_backend()?,
                    };
                    Ok((id, value))
                });
            (backend, result)
        })
        .collect()
}

fn plan_service(
    service: &ServicePortName,
    frontends: &ServiceFrontends<'_>,
    desired: &DesiredState,
    applied: &Applied,
    backend_ids: &BackendIds,
    ids: &mut Ids,
) -> Result<ServicePart, PlanError> {
    let keys = frontends
        .iter()
        .map(|(frontend, _)| frontend_key(frontend))
        .collect::<Result<Vec<_>, _>>()?;
    let carried = keys
        .first()
        .and_then(|key| applied.frontends.get(key))
        .map(|fe| fe.service_id);
    let service_id = ids.service_id(service, carried)?;
    let port = desired.services.get(service);
    let mut part = ServicePart {
        service_id,
        info: port.map(|port| super::algorithm::service_entry(service, port, frontends)),
        tables: Vec::new(),
        tables_used: BTreeSet::new(),
        backends_used: BTreeSet::new(),
        frontends: Vec::new(),
    };
    let sets: Vec<(Vec<Backend>, Vec<u32>)> = frontends
        .iter()
        .map(|(_, spec)| {
            let backends: Vec<Backend> = spec.endpoints.iter().map(|ep| ep.backend).collect();
            let selected = backends
                .iter()
                .map(|backend| backend_ids[backend].clone().map(|(id, _)| id))
                .collect::<Result<Vec<u32>, _>>()?;
            Ok((backends, selected))
        })
        .collect::<Result<_, PlanError>>()?;
    let uses: Vec<FrontendSet<'_>> = keys
        .iter()
        .zip(&sets)
        .map(|(key, (backends, backend_ids))| FrontendSet {
            key: *key,
            backends,
            backend_ids,
        })
        .collect();
    let tables = port_tables(service_id, &uses, ids)?;
    part.tables = tables.writes;
    // Every listed endpoint holds its backend, whatever its conditions: a
    // flow to a draining pod keeps it; only a backend no port lists goes.
    for listed in port.map_or(&[][..], |port| port.listed.as_slice()) {
        let (id, _) = backend_ids[&listed.backend].clone()?;
        part.backends_used.insert(id);
    }
    for (((frontend, spec), key), ((backends, selected), table)) in frontends
        .iter()
        .zip(keys)
        .zip(sets.iter().zip(tables.table_of))
    {
        if let Some(id) = table {
            part.tables_used.insert(id);
            part.backends_used.extend(selected);
        }
        let value = frontend_value(&FrontendEntry {
            service_id,
            table_id: table.unwrap_or(0),
            backend_count: backends.len() as u32,
            kind: Some(spec.kind),
            when_empty: spec.when_empty,
            affinity_timeout_s: spec.affinity_timeout_s,
            masquerade: masquerade::masquerades(frontend, spec.kind, port),
            source_ranges: !spec.source_ranges.is_empty(),
            algorithm: spec.algorithm,
        });
        part.frontends.push((key, value));
    }
    Ok(part)
}

fn add_part(part: ServicePart, applied: &Applied, out: &mut Plan, in_use: &mut InUse) {
    if let Some(info) = part.info
        && applied.service_infos.get(&part.service_id) != Some(&info)
    {
        out.set_services.push((part.service_id, info));
    }
    in_use.services.insert(part.service_id);
    out.write_tables.extend(part.tables);
    in_use.tables.extend(part.tables_used);
    in_use.planned_backends.extend(part.backends_used);
    for (key, value) in part.frontends {
        in_use.frontends.insert(key);
        if applied.frontends.get(&key) != Some(&value) {
            out.set_frontends.push((key, value));
        }
    }
}

/// Frontends, service ports, backends and tables nothing keeps.
fn removals(applied: &Applied, in_use: &InUse, out: &mut Plan) {
    out.remove_services = applied
        .service_infos
        .keys()
        .filter(|id| !in_use.services.contains(id))
        .copied()
        .collect();
    out.remove_frontends = applied
        .frontends
        .keys()
        .filter(|key| !in_use.frontends.contains(key))
        .copied()
        .collect();
    for (id, value) in &applied.backends {
        if in_use.planned_backends.contains(id) || in_use.kept_backends.contains(id) {
            continue;
        }
        out.remove_backends.push((*id, *value));
    }
    out.release_tables = applied
        .tables
        .keys()
        .chain(applied.foreign_tables.keys())
        .filter(|id| !in_use.tables.contains(id))
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
}
