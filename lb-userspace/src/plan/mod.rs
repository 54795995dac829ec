//! Plan: a pure diff between the desired state and what the maps hold, as a
//! list of map writes in an order no packet can observe half-done:
//!
//! 1. new or changed backends,
//! 2. whole Maglev tables into slots nothing references yet,
//! 3. frontend flips (each a single atomic map update),
//! 4. removal of frontends that are gone,
//! 5. removal of backends nothing references any more, and of the stale
//!    UDP connection entries that pointed at them.
//!
//! Table slots freed by a plan are quarantined for one more plan before
//! reuse, so a packet that read the old frontend value just before a flip
//! never indexes a table being rewritten.

pub mod maglev;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
};

use lb_common::{
    BE_FLAG_LOCAL, BE_FLAG_TERMINATING, Backend4, FE_FLAG_EMPTY_DROP, FE_KIND_SHIFT, Frontend4Key,
    FrontendValue, MAGLEV_TABLE_SIZE, MAX_BACKENDS, PROTO_TCP, ServiceInfo,
};

use crate::{
    datapath::{
        DatapathMaps, MapsError,
        codec::{CodecError, backend_from_value, backend_value, frontend_key},
    },
    model::{Backend, DesiredState, FrontendSpec, Protocol, ServicePortName, WhenEmpty},
};

/// What the agent knows the maps hold. Rebuilt from the maps at start-up
/// (`Applied::read`), then kept in step by `apply`.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub frontends: BTreeMap<Frontend4Key, FrontendValue>,
    pub backends: BTreeMap<u32, Backend4>,
    /// Tables whose contents the agent wrote, by the backend set they hold.
    tables: BTreeMap<Vec<Backend>, u32>,
    /// Table ids in use whose contents are unknown (found in the maps at
    /// start-up): never written to until nothing references them.
    foreign_tables: BTreeSet<u32>,
    /// Freed by the previous plan; reusable from the next one on.
    quarantined_tables: BTreeSet<u32>,
    /// Service port ids, and the service map's values for them.
    services: BTreeMap<ServicePortName, u32>,
    pub service_infos: BTreeMap<u32, ServiceInfo>,
}

impl Applied {
    /// Reads what a (possibly pinned, possibly busy) datapath holds. A live
    /// table is adopted when it is exactly what this agent would write for
    /// its backend set, so a restart with nothing changed writes nothing;
    /// any other live table is left alone until nothing references it.
    pub fn read(maps: &dyn DatapathMaps) -> Result<Applied, MapsError> {
        let frontends: BTreeMap<_, _> = maps.frontends()?.into_iter().collect();
        let service_infos: BTreeMap<u32, ServiceInfo> = maps.services()?.into_iter().collect();
        let services = service_infos
            .iter()
            .filter_map(|(id, info)| Some((ServicePortName::from_info(info)?.0, *id)))
            .collect();
        let mut applied = Applied {
            backends: maps.backends()?.into_iter().collect(),
            services,
            service_infos,
            ..Applied::default()
        };
        let live: BTreeSet<u32> = frontends
            .values()
            .filter(|fe| fe.backend_count > 0)
            .map(|fe| fe.table_id)
            .collect();
        for table_id in live {
            let slots = maps.read_table(table_id)?;
            match applied.recognise_table(&slots) {
                Some(backends) => {
                    applied.tables.insert(backends, table_id);
                }
                None => {
                    applied.foreign_tables.insert(table_id);
                }
            }
        }
        applied.frontends = frontends;
        Ok(applied)
    }

    /// The backend set whose Maglev table is exactly `slots`, if any.
    fn recognise_table(&self, slots: &[u32]) -> Option<Vec<Backend>> {
        let ids: BTreeSet<u32> = slots.iter().copied().collect();
        let mut backends: Vec<(Backend, u32)> = ids
            .iter()
            .map(|id| Some((backend_from_value(self.backends.get(id)?)?, *id)))
            .collect::<Option<_>>()?;
        backends.sort();
        let set: Vec<Backend> = backends.iter().map(|(b, _)| *b).collect();
        let expected = maglev::table(&set, MAGLEV_TABLE_SIZE);
        let same = expected.len() == slots.len()
            && expected
                .iter()
                .zip(slots)
                .all(|(index, id)| backends[*index as usize].1 == *id);
        same.then_some(set)
    }

    fn backend_ids(&self) -> BTreeMap<(u32, u16, u8), u32> {
        self.backends
            .iter()
            .map(|(id, be)| (identity(be), *id))
            .collect()
    }

    fn table_ids_in_use(&self) -> BTreeSet<u32> {
        self.tables
            .values()
            .chain(&self.foreign_tables)
            .chain(&self.quarantined_tables)
            .copied()
            .collect()
    }
}

/// The ordered map writes that take `Applied` to the desired state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Names and policies, written before any frontend refers to them.
    pub set_services: Vec<(u32, ServiceInfo)>,
    pub set_backends: Vec<(u32, Backend4)>,
    pub write_tables: Vec<TableWrite>,
    pub set_frontends: Vec<(Frontend4Key, FrontendValue)>,
    pub remove_frontends: Vec<Frontend4Key>,
    pub remove_backends: Vec<(u32, Backend4)>,
    /// Service ports no frontend refers to any more.
    pub remove_services: Vec<u32>,
    /// Removed backends of connectionless protocols whose connection
    /// entries must go (kube-proxy's UDP conntrack flush).
    pub purge_connections: Vec<Backend4>,
    /// Tables nothing references after this plan.
    pub release_tables: Vec<u32>,
    /// Service ids assigned by this plan.
    pub new_services: Vec<(ServicePortName, u32)>,
    /// Tables written by this plan, by content, for `Applied`.
    new_tables: Vec<(Vec<Backend>, u32)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableWrite {
    pub table_id: u32,
    pub backends: Vec<Backend>,
    /// `MAGLEV_TABLE_SIZE` backend ids.
    pub slots: Vec<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "all {max} Maglev tables are in use: start the agent with a larger --max-tables (each costs {} KiB of kernel memory)",
        MAGLEV_TABLE_SIZE * 4 / 1024
    )]
    TablesExhausted { max: u32 },
    #[error("all {MAX_BACKENDS} backend ids are in use: too many distinct endpoints for this node")]
    BackendsExhausted,
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.set_services.is_empty()
            && self.remove_services.is_empty()
            && self.set_backends.is_empty()
            && self.write_tables.is_empty()
            && self.set_frontends.is_empty()
            && self.remove_frontends.is_empty()
            && self.remove_backends.is_empty()
            && self.purge_connections.is_empty()
    }
}

/// Computes the plan. Pure: reads only its arguments.
pub fn plan(desired: &DesiredState, applied: &Applied, max_tables: u32) -> Result<Plan, PlanError> {
    let mut out = Plan::default();
    let mut ids = Ids::new(applied, max_tables);

    // 1. Backends: every backend any frontend uses, with up-to-date flags.
    let wanted_backends = wanted_backends(desired);
    let mut backend_id = BTreeMap::new();
    for (backend, flags) in &wanted_backends {
        let value = backend_value(backend, *flags)?;
        let id = match ids.backend_ids.get(&identity(&value)) {
            Some(id) => *id,
            None => ids.next_backend()?,
        };
        if applied.backends.get(&id) != Some(&value) {
            out.set_backends.push((id, value));
        }
        backend_id.insert(*backend, id);
    }

    // 2 and 3. Tables by content, then frontend values.
    // Each service port's names and policies go with its first frontend.
    let mut tables_used = BTreeSet::new();
    let mut wanted_frontends = BTreeSet::new();
    let mut services_used = BTreeSet::new();
    for (frontend, spec) in &desired.frontends {
        let key = frontend_key(frontend)?;
        wanted_frontends.insert(key);
        let service_id = ids.service_id(&spec.service, applied, key, &mut out);
        if services_used.insert(service_id)
            && let Some(port) = desired.services.get(&spec.service)
        {
            let info = spec.service.to_info(port);
            if applied.service_infos.get(&service_id) != Some(&info) {
                out.set_services.push((service_id, info));
            }
        }
        let backends: Vec<Backend> = spec.endpoints.iter().map(|ep| ep.backend).collect();
        let table_id = if backends.is_empty() {
            0
        } else {
            let id = ids.table_for(&backends, &backend_id, &mut out)?;
            tables_used.insert(id);
            id
        };
        let value = frontend_value(spec, service_id, table_id, backends.len() as u32);
        if applied.frontends.get(&key) != Some(&value) {
            out.set_frontends.push((key, value));
        }
    }

    out.remove_services = applied
        .service_infos
        .keys()
        .filter(|id| !services_used.contains(id))
        .copied()
        .collect();

    // 4. Frontends that are gone.
    out.remove_frontends = applied
        .frontends
        .keys()
        .filter(|key| !wanted_frontends.contains(key))
        .copied()
        .collect();

    // 5. Backends and tables nothing references any more.
    let still_used: BTreeSet<u32> = backend_id.values().copied().collect();
    for (id, value) in &applied.backends {
        if !still_used.contains(id) {
            out.remove_backends.push((*id, *value));
            if value.proto != PROTO_TCP {
                out.purge_connections.push(*value);
            }
        }
    }
    out.release_tables = applied
        .tables
        .values()
        .chain(&applied.foreign_tables)
        .filter(|id| !tables_used.contains(id))
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(out)
}

/// Applies a plan in order, then records it in `applied`. On error the maps
/// hold a consistent prefix of the plan (every step leaves them valid), and
/// `applied` is re-read by the caller before the next attempt.
pub fn apply(
    plan: &Plan,
    maps: &mut dyn DatapathMaps,
    applied: &mut Applied,
) -> Result<(), MapsError> {
    for (id, info) in &plan.set_services {
        maps.set_service(*id, info)?;
    }
    for (id, value) in &plan.set_backends {
        maps.set_backend(*id, value)?;
    }
    for table in &plan.write_tables {
        maps.write_table(table.table_id, &table.slots)?;
    }
    for (key, value) in &plan.set_frontends {
        maps.set_frontend(key, value)?;
    }
    for key in &plan.remove_frontends {
        maps.remove_frontend(key)?;
    }
    for (id, _) in &plan.remove_backends {
        maps.remove_backend(*id)?;
    }
    for id in &plan.remove_services {
        maps.remove_service(*id)?;
    }
    if !plan.purge_connections.is_empty() {
        maps.purge_connections_to(&plan.purge_connections)?;
    }
    record(plan, applied);
    Ok(())
}

fn record(plan: &Plan, applied: &mut Applied) {
    applied
        .service_infos
        .extend(plan.set_services.iter().copied());
    for id in &plan.remove_services {
        applied.service_infos.remove(id);
    }
    applied
        .services
        .retain(|_, id| !plan.remove_services.contains(id));
    applied.backends.extend(plan.set_backends.iter().copied());
    for (id, _) in &plan.remove_backends {
        applied.backends.remove(id);
    }
    applied.frontends.extend(plan.set_frontends.iter().copied());
    for key in &plan.remove_frontends {
        applied.frontends.remove(key);
    }
    let released: BTreeSet<u32> = plan.release_tables.iter().copied().collect();
    applied.tables.retain(|_, id| !released.contains(id));
    applied.foreign_tables.retain(|id| !released.contains(id));
    applied.tables.extend(plan.new_tables.iter().cloned());
    applied.quarantined_tables = released;
    applied.services.extend(
        plan.new_services
            .iter()
            .filter(|(_, id)| !plan.remove_services.contains(id))
            .cloned(),
    );
}

/// Allocation of backend, table and service ids for one plan.
struct Ids<'a> {
    applied: &'a Applied,
    backend_ids: BTreeMap<(u32, u16, u8), u32>,
    used_backend_ids: BTreeSet<u32>,
    used_table_ids: BTreeSet<u32>,
    max_tables: u32,
    used_service_ids: BTreeSet<u32>,
    planned_tables: BTreeMap<Vec<Backend>, u32>,
}

impl<'a> Ids<'a> {
    fn new(applied: &'a Applied, max_tables: u32) -> Ids<'a> {
        let backend_ids = applied.backend_ids();
        Ids {
            applied,
            used_backend_ids: applied.backends.keys().copied().collect(),
            backend_ids,
            used_table_ids: applied.table_ids_in_use(),
            max_tables,
            used_service_ids: applied
                .services
                .values()
                .copied()
                .chain(applied.frontends.values().map(|fe| fe.service_id))
                .chain(applied.service_infos.keys().copied())
                .collect(),
            planned_tables: BTreeMap::new(),
        }
    }

    fn next_backend(&mut self) -> Result<u32, PlanError> {
        // Id 0 is never used, so a zeroed table slot can never name a backend.
        let id = (1..MAX_BACKENDS).find(|id| !self.used_backend_ids.contains(id));
        let id = id.ok_or(PlanError::BackendsExhausted)?;
        self.used_backend_ids.insert(id);
        Ok(id)
    }

    /// The table holding exactly `backends`: the one already written, or a
    /// new one in a free slot.
    fn table_for(
        &mut self,
        backends: &[Backend],
        backend_id: &BTreeMap<Backend, u32>,
        out: &mut Plan,
    ) -> Result<u32, PlanError> {
        if let Some(id) = self
            .applied
            .tables
            .get(backends)
            .or_else(|| self.planned_tables.get(backends))
        {
            return Ok(*id);
        }
        let id = (0..self.max_tables)
            .find(|id| !self.used_table_ids.contains(id))
            .ok_or(PlanError::TablesExhausted {
                max: self.max_tables,
            })?;
        self.used_table_ids.insert(id);
        let slots = maglev::table(backends, MAGLEV_TABLE_SIZE)
            .into_iter()
            .map(|index| backend_id[&backends[index as usize]])
            .collect();
        out.write_tables.push(TableWrite {
            table_id: id,
            backends: backends.to_vec(),
            slots,
        });
        out.new_tables.push((backends.to_vec(), id));
        self.planned_tables.insert(backends.to_vec(), id);
        Ok(id)
    }

    /// A stable id per Service port: the one already known, else the one the
    /// maps carry for this frontend (after a restart), else a new one.
    fn service_id(
        &mut self,
        service: &ServicePortName,
        applied: &Applied,
        key: Frontend4Key,
        out: &mut Plan,
    ) -> u32 {
        if let Some(id) = applied.services.get(service) {
            return *id;
        }
        if let Some((_, id)) = out.new_services.iter().find(|(name, _)| name == service) {
            return *id;
        }
        let id = applied
            .frontends
            .get(&key)
            .map(|fe| fe.service_id)
            .filter(|id| *id != 0 && !out.new_services.iter().any(|(_, taken)| taken == id))
            .unwrap_or_else(|| {
                (1..)
                    .find(|id| !self.used_service_ids.contains(id))
                    .unwrap_or(u32::MAX)
            });
        self.used_service_ids.insert(id);
        out.new_services.push((service.clone(), id));
        id
    }
}

fn wanted_backends(desired: &DesiredState) -> BTreeMap<Backend, u8> {
    let mut wanted = BTreeMap::new();
    for spec in desired.frontends.values() {
        for endpoint in &spec.endpoints {
            let mut flags = 0;
            if endpoint.terminating {
                flags |= BE_FLAG_TERMINATING;
            }
            if endpoint.local {
                flags |= BE_FLAG_LOCAL;
            }
            wanted
                .entry(endpoint.backend)
                .and_modify(|f| *f &= flags)
                .or_insert(flags);
        }
    }
    wanted
}

fn frontend_value(
    spec: &FrontendSpec,
    service_id: u32,
    table_id: u32,
    backend_count: u32,
) -> FrontendValue {
    let mut flags = spec.kind.code() << FE_KIND_SHIFT;
    if spec.when_empty == WhenEmpty::Drop {
        flags |= FE_FLAG_EMPTY_DROP;
    }
    FrontendValue {
        service_id,
        table_id,
        backend_count,
        flags,
    }
}

fn identity(backend: &Backend4) -> (u32, u16, u8) {
    (backend.addr_be, backend.port_be, backend.proto)
}

impl fmt::Display for Plan {
    /// The plan as `lb agent --dry-run` prints it, one write per line, in
    /// the order they are applied.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (id, info) in &self.set_services {
            match ServicePortName::from_info(info) {
                Some((name, port)) => writeln!(
                    f,
                    "set service {id} = {name} ({}, port {})",
                    name.protocol, port.port
                )?,
                None => writeln!(f, "set service {id}")?,
            }
        }
        for (id, be) in &self.set_backends {
            writeln!(f, "set backend {id} = {}", describe_backend(be))?;
        }
        for table in &self.write_tables {
            let names: Vec<String> = table.backends.iter().map(ToString::to_string).collect();
            writeln!(
                f,
                "write maglev table {} over [{}]",
                table.table_id,
                names.join(", ")
            )?;
        }
        for (key, value) in &self.set_frontends {
            writeln!(
                f,
                "set frontend {} -> service {} table {} ({} backends)",
                describe_frontend(key),
                value.service_id,
                value.table_id,
                value.backend_count
            )?;
        }
        for key in &self.remove_frontends {
            writeln!(f, "remove frontend {}", describe_frontend(key))?;
        }
        for (id, be) in &self.remove_backends {
            writeln!(f, "remove backend {id} = {}", describe_backend(be))?;
        }
        for id in &self.remove_services {
            writeln!(f, "remove service {id}")?;
        }
        for be in &self.purge_connections {
            writeln!(f, "purge connections to {}", describe_backend(be))?;
        }
        Ok(())
    }
}

fn describe_backend(be: &Backend4) -> String {
    match backend_from_value(be) {
        Some(b) => format!("{b}/{}", b.protocol),
        None => format!("{:?}", be),
    }
}

pub fn describe_frontend(key: &Frontend4Key) -> String {
    let scope = if key.scope == lb_common::SCOPE_EXTERNAL {
        "external"
    } else {
        "internal"
    };
    let proto = Protocol::from_ip_number(key.proto)
        .map_or_else(|| key.proto.to_string(), |p| p.to_string());
    format!(
        "{}:{}/{proto} ({scope})",
        Ipv4Addr::from(key.addr_be.to_ne_bytes()),
        u16::from_be(key.port_be)
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use lb_common::{MAGLEV_TABLE_SIZE, PROTO_UDP};

    use super::*;
    use crate::model::{Endpoint, Frontend, FrontendKind, Scope, ServicePortInfo};

    /// The maps as plain collections, recording the order of writes.
    #[derive(Default)]
    struct MemoryMaps {
        services: BTreeMap<u32, ServiceInfo>,
        frontends: BTreeMap<Frontend4Key, FrontendValue>,
        backends: BTreeMap<u32, Backend4>,
        tables: BTreeMap<u32, Vec<u32>>,
        log: Vec<String>,
        purged: Vec<Backend4>,
    }

    impl DatapathMaps for MemoryMaps {
        fn max_tables(&self) -> u32 {
            4
        }
        fn frontends(&self) -> Result<Vec<(Frontend4Key, FrontendValue)>, MapsError> {
            Ok(self.frontends.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn backends(&self) -> Result<Vec<(u32, Backend4)>, MapsError> {
            Ok(self.backends.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn set_backend(&mut self, id: u32, backend: &Backend4) -> Result<(), MapsError> {
            self.log.push(format!("backend {id}"));
            self.backends.insert(id, *backend);
            Ok(())
        }
        fn remove_backend(&mut self, id: u32) -> Result<(), MapsError> {
            self.log.push(format!("-backend {id}"));
            self.backends.remove(&id);
            Ok(())
        }
        fn services(&self) -> Result<Vec<(u32, ServiceInfo)>, MapsError> {
            Ok(self.services.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn set_service(&mut self, id: u32, info: &ServiceInfo) -> Result<(), MapsError> {
            self.log.push(format!("service {id}"));
            self.services.insert(id, *info);
            Ok(())
        }
        fn remove_service(&mut self, id: u32) -> Result<(), MapsError> {
            assert!(
                !self.frontends.values().any(|fe| fe.service_id == id),
                "service {id} removed while referenced"
            );
            self.log.push(format!("-service {id}"));
            self.services.remove(&id);
            Ok(())
        }
        fn read_table(&self, table_id: u32) -> Result<Vec<u32>, MapsError> {
            Ok(self.tables[&table_id].clone())
        }
        fn write_table(&mut self, table_id: u32, slots: &[u32]) -> Result<(), MapsError> {
            // The invariant that makes flips safe: no frontend references a
            // table while it is being written.
            assert!(
                !self
                    .frontends
                    .values()
                    .any(|fe| fe.backend_count > 0 && fe.table_id == table_id),
                "table {table_id} rewritten while referenced"
            );
            for id in slots {
                assert!(
                    self.backends.contains_key(id),
                    "table names backend {id} before it exists"
                );
            }
            self.log.push(format!("table {table_id}"));
            self.tables.insert(table_id, slots.to_vec());
            Ok(())
        }
        fn set_frontend(
            &mut self,
            key: &Frontend4Key,
            value: &FrontendValue,
        ) -> Result<(), MapsError> {
            if value.backend_count > 0 {
                assert!(
                    self.tables.contains_key(&value.table_id),
                    "frontend flipped to an unwritten table"
                );
            }
            assert!(
                self.services.contains_key(&value.service_id),
                "frontend names an unwritten service"
            );
            self.log
                .push(format!("frontend {}", u16::from_be(key.port_be)));
            self.frontends.insert(*key, *value);
            Ok(())
        }
        fn remove_frontend(&mut self, key: &Frontend4Key) -> Result<(), MapsError> {
            self.log
                .push(format!("-frontend {}", u16::from_be(key.port_be)));
            self.frontends.remove(key);
            Ok(())
        }
        fn purge_connections_to(&mut self, backends: &[Backend4]) -> Result<usize, MapsError> {
            self.purged.extend_from_slice(backends);
            Ok(backends.len())
        }
    }

    impl MemoryMaps {
        /// Which backend a frontend's table sends slot `slot` to.
        fn backend_at(&self, port: u16, scope: Scope, slot: usize) -> Option<Backend> {
            let key = frontend_key(&frontend(port, scope)).unwrap();
            let fe = self.frontends.get(&key)?;
            let id = self.tables.get(&fe.table_id)?[slot];
            backend_from_value(&self.backends[&id])
        }
    }

    fn frontend(port: u16, scope: Scope) -> Frontend {
        Frontend {
            addr: Ipv4Addr::new(192, 0, 2, 10).into(),
            port,
            protocol: Protocol::Tcp,
            scope,
        }
    }

    fn backend(last: u8, protocol: Protocol) -> Backend {
        Backend {
            addr: Ipv4Addr::new(203, 0, 113, last).into(),
            port: 8080,
            protocol,
        }
    }

    fn spec(name: &str, backends: &[Backend]) -> FrontendSpec {
        FrontendSpec {
            service: ServicePortName {
                namespace: "default".into(),
                name: name.into(),
                port_name: "http".into(),
                protocol: Protocol::Tcp,
            },
            kind: FrontendKind::ClusterIp,
            endpoints: backends
                .iter()
                .map(|b| Endpoint {
                    backend: *b,
                    terminating: false,
                    local: true,
                    target: None,
                })
                .collect(),
            when_empty: WhenEmpty::Reject,
            selection: String::new(),
        }
    }

    fn desired(entries: &[(Frontend, FrontendSpec)]) -> DesiredState {
        let services = entries
            .iter()
            .map(|(fe, spec)| {
                let info = ServicePortInfo {
                    port: fe.port,
                    external_policy_local: false,
                    internal_policy_local: false,
                    topology_aware: false,
                };
                (spec.service.clone(), info)
            })
            .collect();
        DesiredState {
            frontends: entries.iter().cloned().collect(),
            services,
            problems: vec![],
        }
    }

    fn sync(state: &DesiredState, maps: &mut MemoryMaps, applied: &mut Applied) -> Plan {
        let plan = plan(state, applied, maps.max_tables()).expect("plan");
        apply(&plan, maps, applied).expect("apply");
        plan
    }

    #[test]
    fn first_sync_writes_service_backends_table_then_frontend() {
        let (a, b) = (backend(11, Protocol::Tcp), backend(12, Protocol::Tcp));
        let state = desired(&[(frontend(80, Scope::Internal), spec("web", &[a, b]))]);
        let mut maps = MemoryMaps::default();
        let mut applied = Applied::default();
        sync(&state, &mut maps, &mut applied);
        assert_eq!(
            maps.log,
            [
                "service 1",
                "backend 1",
                "backend 2",
                "table 0",
                "frontend 80"
            ]
        );
        let table = &maps.tables[&0];
        assert_eq!(table.len(), MAGLEV_TABLE_SIZE as usize);
        assert!(table.contains(&1) && table.contains(&2));
    }

    #[test]
    fn unchanged_state_plans_nothing() {
        let state = desired(&[(
            frontend(80, Scope::Internal),
            spec("web", &[backend(11, Protocol::Tcp)]),
        )]);
        let mut maps = MemoryMaps::default();
        let mut applied = Applied::default();
        sync(&state, &mut maps, &mut applied);
        let again = plan(&state, &applied, 4).unwrap();
        assert!(again.is_empty(), "{again}");
    }

    #[test]
    fn frontends_with_the_same_backends_share_one_table() {
        let bs = [backend(11, Protocol::Tcp), backend(12, Protocol::Tcp)];
        let state = desired(&[
            (frontend(80, Scope::Internal), spec("web", &bs)),
            (frontend(80, Scope::External), spec("web", &bs)),
        ]);
        let mut maps = MemoryMaps::default();
        let mut applied = Applied::default();
        let plan = sync(&state, &mut maps, &mut applied);
        assert_eq!(plan.write_tables.len(), 1);
    }

    #[test]
    fn a_change_writes_a_new_table_and_quarantines_the_old_one() {
        let (a, b, c) = (
            backend(11, Protocol::Tcp),
            backend(12, Protocol::Tcp),
            backend(13, Protocol::Tcp),
        );
        let mut maps = MemoryMaps::default();
        let mut applied = Applied::default();
        sync(
            &desired(&[(frontend(80, Scope::Internal), spec("web", &[a, b, c]))]),
            &mut maps,
            &mut applied,
        );
        maps.log.clear();
        let plan = sync(
            &desired(&[(frontend(80, Scope::Internal), spec("web", &[a, b]))]),
            &mut maps,
            &mut applied,
        );
        // New table in a fresh slot, flip, then the backend nothing uses goes.
        assert_eq!(maps.log, ["table 1", "frontend 80", "-backend 3"]);
        assert_eq!(plan.release_tables, [0]);
        // Slot 0 is quarantined for one sync, reusable after.
        let plan = sync(
            &desired(&[(frontend(80, Scope::Internal), spec("web", &[a]))]),
            &mut maps,
            &mut applied,
        );
        assert_eq!(plan.write_tables[0].table_id, 2);
        let plan = sync(
            &desired(&[(frontend(80, Scope::Internal), spec("web", &[b]))]),
            &mut maps,
            &mut applied,
        );
        assert_eq!(plan.write_tables[0].table_id, 0);
    }

    #[test]
    fn removing_a_backend_keeps_the_others_slots() {
        let bs: Vec<Backend> = (11..=15).map(|i| backend(i, Protocol::Tcp)).collect();
        let mut maps = MemoryMaps::default();
        let mut applied = Applied::default();
        sync(
            &desired(&[(frontend(80, Scope::Internal), spec("web", &bs))]),
            &mut maps,
            &mut applied,
        );
        let before: Vec<_> = (0..MAGLEV_TABLE_SIZE as usize)
            .map(|s| maps.backend_at(80, Scope::Internal, s).unwrap())
            .collect();
        sync(
            &desired(&[(frontend(80, Scope::Internal), spec("web", &bs[..4]))]),
            &mut maps,
            &mut applied,
        );
        // Maglev moves the removed backend's slots, and only a few others.
        let survivors = before.iter().filter(|was| **was != bs[4]).count();
        let moved = before
            .iter()
            .enumerate()
            .filter(|(slot, was)| {
                **was != bs[4] && maps.backend_at(80, Scope::Internal, *slot).as_ref() != Some(*was)
            })
            .count();
        assert!(
            moved * 20 <= survivors,
            "{moved} of {survivors} surviving slots moved"
        );
    }

    #[test]
    fn removed_udp_backends_have_their_connections_purged_tcp_do_not() {
        let (u1, u2) = (backend(11, Protocol::Udp), backend(12, Protocol::Udp));
        let (t1, t2) = (backend(21, Protocol::Tcp), backend(22, Protocol::Tcp));
        let mut maps = MemoryMaps::default();
        let mut applied = Applied::default();
        let dns = |bs: &[Backend]| {
            let mut s = spec("dns", bs);
            s.service.protocol = Protocol::Udp;
            s
        };
        let udp_fe = Frontend {
            protocol: Protocol::Udp,
            ..frontend(53, Scope::Internal)
        };
        sync(
            &desired(&[
                (udp_fe, dns(&[u1, u2])),
                (frontend(80, Scope::Internal), spec("web", &[t1, t2])),
            ]),
            &mut maps,
            &mut applied,
        );
        sync(
            &desired(&[
                (udp_fe, dns(&[u1])),
                (frontend(80, Scope::Internal), spec("web", &[t1])),
            ]),
            &mut maps,
            &mut applied,
        );
        assert_eq!(maps.purged.len(), 1);
        assert_eq!(maps.purged[0].proto, PROTO_UDP);
        assert_eq!(backend_from_value(&maps.purged[0]), Some(u2));
    }

    #[test]
    fn a_restarted_agent_adopts_what_the_maps_hold_and_writes_nothing() {
        let (a, b) = (backend(11, Protocol::Tcp), backend(12, Protocol::Tcp));
        let state = desired(&[(frontend(80, Scope::Internal), spec("web", &[a, b]))]);
        let mut maps = MemoryMaps::default();
        let mut applied = Applied::default();
        sync(&state, &mut maps, &mut applied);
        let service_id = maps.frontends.values().next().unwrap().service_id;
        // A new agent knows only what the maps say.
        let mut restarted = Applied::read(&maps).unwrap();
        maps.log.clear();
        let replan = sync(&state, &mut maps, &mut restarted);
        assert!(replan.is_empty(), "{replan}");
        assert!(maps.log.is_empty(), "{:?}", maps.log);
        assert_eq!(
            maps.frontends.values().next().unwrap().service_id,
            service_id
        );
        // And it goes on from there: a change writes a new table beside the live one.
        let next = sync(
            &desired(&[(frontend(80, Scope::Internal), spec("web", &[a]))]),
            &mut maps,
            &mut restarted,
        );
        assert_eq!(next.write_tables[0].table_id, 1);
    }

    #[test]
    fn a_live_table_the_agent_cannot_recognise_is_never_written() {
        let (a, b) = (backend(11, Protocol::Tcp), backend(12, Protocol::Tcp));
        let state = desired(&[(frontend(80, Scope::Internal), spec("web", &[a, b]))]);
        let mut maps = MemoryMaps::default();
        let mut applied = Applied::default();
        sync(&state, &mut maps, &mut applied);
        // Say an older agent version filled slots differently.
        maps.tables.get_mut(&0).unwrap().reverse();
        let mut restarted = Applied::read(&maps).unwrap();
        maps.log.clear();
        let replan = sync(&state, &mut maps, &mut restarted);
        // A new table (write_table asserts it is not the live one), then the flip.
        assert_eq!(maps.log, ["table 1", "frontend 80"]);
        assert_eq!(replan.release_tables, [0]);
        assert!(plan(&state, &restarted, 4).unwrap().is_empty());
    }

    #[test]
    fn empty_frontends_carry_their_verdict() {
        let mut dropping = spec("local", &[]);
        dropping.when_empty = WhenEmpty::Drop;
        let state = desired(&[
            (frontend(80, Scope::External), dropping),
            (frontend(81, Scope::External), spec("none", &[])),
        ]);
        let mut maps = MemoryMaps::default();
        let mut applied = Applied::default();
        let plan = sync(&state, &mut maps, &mut applied);
        assert!(plan.write_tables.is_empty());
        let fe = |port| maps.frontends[&frontend_key(&frontend(port, Scope::External)).unwrap()];
        assert_eq!(fe(80).flags & FE_FLAG_EMPTY_DROP, FE_FLAG_EMPTY_DROP);
        assert_eq!(fe(81).flags & FE_FLAG_EMPTY_DROP, 0);
        assert_eq!(fe(80).backend_count, 0);
    }

    #[test]
    fn running_out_of_tables_is_a_clear_error_and_changes_nothing() {
        let entries: Vec<_> = (0..5u16)
            .map(|i| {
                (
                    frontend(80 + i, Scope::Internal),
                    spec(&format!("s{i}"), &[backend(11 + i as u8, Protocol::Tcp)]),
                )
            })
            .collect();
        let applied = Applied::default();
        let err = plan(&desired(&entries), &applied, 4).unwrap_err();
        assert_eq!(err, PlanError::TablesExhausted { max: 4 });
        assert!(err.to_string().contains("--max-tables"));
    }

    #[test]
    fn removed_frontends_and_services_go_after_the_flips() {
        let a = backend(11, Protocol::Tcp);
        let mut maps = MemoryMaps::default();
        let mut applied = Applied::default();
        sync(
            &desired(&[(frontend(80, Scope::Internal), spec("old", &[a]))]),
            &mut maps,
            &mut applied,
        );
        maps.log.clear();
        sync(
            &desired(&[(frontend(81, Scope::Internal), spec("new", &[a]))]),
            &mut maps,
            &mut applied,
        );
        assert_eq!(
            maps.log,
            ["service 2", "frontend 81", "-frontend 80", "-service 1"]
        );
    }
}
