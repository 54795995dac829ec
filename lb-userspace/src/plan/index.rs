//! Indexes over what the maps hold, kept across plans so that planning a
//! change costs in proportion to the change: who references each table and
//! backend, the frontends of each service id, backend ids by identity, and
//! the free ids. Built whole when the maps are read (start-up, a resync, a
//! failed apply), then updated by each applied plan (`Applied::record`).

use std::collections::BTreeSet;

// foldhash: every key here is an id or an identity the plan computed,
// and a full sync at 10,000 Services indexes 100,000 backends (SipHash,
// std's default, led the record of its plan).
use foldhash::HashMap;
use lb_common::{Frontend4Key, FrontendValue};

use super::{Applied, MAX_SERVICE_ID, Plan, free_ids::FreeIds};
use crate::{
    datapath::codec::{BackendFlags, backend_identity, backend_value},
    model::{Backend, ServicePortName},
};

/// A backend's identity in the maps: address, port, protocol.
pub(super) type Identity = (u32, u16, u8);

#[derive(Clone, Debug, PartialEq)]
pub(super) struct Index {
    pub(super) backend_ids: HashMap<Identity, u32>,
    /// The distinct backend ids each live table (known or foreign) names.
    pub(super) table_named: HashMap<u32, Vec<u32>>,
    /// Frontends selecting from each table.
    pub(super) table_users: HashMap<u32, u32>,
    /// Frontends selecting from each table, per service id they carry: a
    /// table all of whose users carry one id belongs to that Service port
    /// (`exclusive_to`), which may rewrite it in place.
    pub(super) table_services: HashMap<u32, HashMap<u32, u32>>,
    /// Live tables naming each backend id.
    pub(super) backend_tables: HashMap<u32, u32>,
    /// Frontends carrying each service id.
    pub(super) service_frontends: HashMap<u32, BTreeSet<Frontend4Key>>,
    /// The Service port of each id `Applied::services` names.
    pub(super) service_names: HashMap<u32, ServicePortName>,
    pub(super) free_backends: FreeIds,
    pub(super) free_tables: FreeIds,
    pub(super) free_services: FreeIds,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            backend_ids: HashMap::default(),
            table_named: HashMap::default(),
            table_users: HashMap::default(),
            table_services: HashMap::default(),
            backend_tables: HashMap::default(),
            service_frontends: HashMap::default(),
            service_names: HashMap::default(),
            // Backend id 0 is never used, so a zeroed table slot can never
            // name a backend; service id 0 neither (see `MAX_SERVICE_ID`).
            free_backends: FreeIds::new(1),
            free_tables: FreeIds::new(0),
            free_services: FreeIds::new(1),
        }
    }
}

/// The identity of a desired backend (`None`: not IPv4, never in the maps).
pub(super) fn identity_of(backend: &Backend) -> Option<Identity> {
    backend_value(backend, BackendFlags::default())
        .ok()
        .map(|value| backend_identity(&value))
}

impl Index {
    /// Everything `applied` holds, indexed; ids past their map's size
    /// (an older agent's) are never handed out anyway, so not tracked.
    pub(super) fn build(applied: &Applied, max_tables: u32) -> Index {
        let mut index = Index::default();
        for (id, value) in &applied.backends {
            index.backend_ids.insert(backend_identity(value), *id);
        }
        for (table_id, backends) in &applied.tables {
            let named = index.ids_of(backends);
            index.add_table(*table_id, named);
        }
        for (table_id, named) in &applied.foreign_tables {
            index.add_table(*table_id, named.iter().copied().collect());
        }
        for (key, value) in &applied.frontends {
            index.add_frontend(*key, value);
        }
        for (name, id) in &applied.services {
            index.service_names.insert(*id, name.clone());
        }
        let backends_used = applied.backends.keys().copied();
        let max_backends = applied.max_backends.0;
        index.free_backends = FreeIds::with_used(1, backends_used.filter(|id| *id <= max_backends));
        let tables_used = applied.table_ids_in_use().into_iter();
        index.free_tables = FreeIds::with_used(0, tables_used.filter(|id| *id < max_tables));
        let services_used = applied
            .services
            .values()
            .copied()
            .chain(applied.frontends.values().map(|fe| fe.service_id))
            .chain(applied.service_infos.keys().copied())
            .filter(|id| (1..=MAX_SERVICE_ID).contains(id));
        index.free_services = FreeIds::with_used(1, services_used);
        index
    }

    /// The distinct ids of `backends` (all have one: a known table's).
    fn ids_of(&self, backends: &[Backend]) -> Vec<u32> {
        let ids: BTreeSet<u32> = backends
            .iter()
            .filter_map(|b| self.backend_ids.get(&identity_of(b)?).copied())
            .collect();
        ids.into_iter().collect()
    }

    fn add_table(&mut self, table_id: u32, named: Vec<u32>) {
        for id in &named {
            *self.backend_tables.entry(*id).or_default() += 1;
        }
        self.table_named.insert(table_id, named);
    }

    fn remove_table(&mut self, table_id: u32) {
        for id in self.table_named.remove(&table_id).unwrap_or_default() {
            decrement(&mut self.backend_tables, id);
        }
    }

    fn add_frontend(&mut self, key: Frontend4Key, value: &FrontendValue) {
        if value.backend_count > 0 {
            *self.table_users.entry(value.table_id).or_default() += 1;
            let services = self.table_services.entry(value.table_id).or_default();
            *services.entry(value.service_id).or_default() += 1;
        }
        self.service_frontends
            .entry(value.service_id)
            .or_default()
            .insert(key);
    }

    fn remove_frontend(&mut self, key: &Frontend4Key, value: &FrontendValue) {
        if value.backend_count > 0 {
            decrement(&mut self.table_users, value.table_id);
            if let Some(services) = self.table_services.get_mut(&value.table_id) {
                decrement(services, value.service_id);
                if services.is_empty() {
                    self.table_services.remove(&value.table_id);
                }
            }
        }
        if let Some(keys) = self.service_frontends.get_mut(&value.service_id) {
            keys.remove(key);
            if keys.is_empty() {
                self.service_frontends.remove(&value.service_id);
            }
        }
    }

    /// Frontends selecting from `table_id`.
    pub(super) fn users_of_table(&self, table_id: u32) -> u32 {
        self.table_users.get(&table_id).copied().unwrap_or(0)
    }

    /// Whether every frontend selecting from `table_id` carries
    /// `service_id` (and one does): the table is that Service port's alone,
    /// so rewriting it in place shows no other Service a foreign table.
    pub(super) fn exclusive_to(&self, table_id: u32, service_id: u32) -> bool {
        self.table_services
            .get(&table_id)
            .is_some_and(|services| services.len() == 1 && services.contains_key(&service_id))
    }

    /// Live tables naming backend `id`.
    pub(super) fn tables_naming(&self, id: u32) -> u32 {
        self.backend_tables.get(&id).copied().unwrap_or(0)
    }

    /// Updates the indexes for `plan`, applied to `before` (the maps as
    /// they were: the frontends it overwrites or removes).
    pub(super) fn record(&mut self, plan: &Plan, before: &Applied, quarantined: &BTreeSet<u32>) {
        for key in &plan.remove_frontends {
            if let Some(old) = before.frontends.get(key) {
                self.remove_frontend(key, old);
            }
        }
        for (key, value) in &plan.set_frontends {
            if let Some(old) = before.frontends.get(key) {
                self.remove_frontend(key, old);
            }
            self.add_frontend(*key, value);
        }
        for table_id in &plan.release_tables {
            self.remove_table(*table_id);
        }
        // Freed by the previous plan: reusable now.
        for table_id in quarantined {
            self.free_tables.release(*table_id);
        }
        for (id, value) in &plan.set_backends {
            self.backend_ids.insert(backend_identity(value), *id);
            self.free_backends.take(*id);
        }
        for table in &plan.write_tables {
            // Rewritten in place: what it named before is named no more.
            self.remove_table(table.table_id);
            let named: BTreeSet<u32> = table.backend_ids.iter().copied().collect();
            self.add_table(table.table_id, named.into_iter().collect());
            self.free_tables.take(table.table_id);
        }
        for (id, value) in &plan.remove_backends {
            if self.backend_ids.get(&backend_identity(value)) == Some(id) {
                self.backend_ids.remove(&backend_identity(value));
            }
            self.free_backends.release(*id);
        }
        for (id, _) in &plan.set_services {
            self.free_services.take(*id);
        }
        for (name, id) in &plan.new_services {
            self.free_services.take(*id);
            if !plan.remove_services.contains(id) {
                self.service_names.insert(*id, name.clone());
            }
        }
    }

    /// Releases the service ids nothing uses any more after `record`.
    pub(super) fn release_unused_services(
        &mut self,
        candidates: impl IntoIterator<Item = u32>,
        applied: &Applied,
    ) {
        for id in candidates {
            let used = applied.service_infos.contains_key(&id)
                || self.service_frontends.contains_key(&id)
                || self.service_names.contains_key(&id);
            if !used && (1..=MAX_SERVICE_ID).contains(&id) {
                self.free_services.release(id);
            }
        }
    }
}

#[cfg(test)]
impl Index {
    /// The fields that differ from `other`'s, each as (kept, other), sorted.
    pub(super) fn differences(&self, other: &Index) -> Vec<(&'static str, String, String)> {
        fn sorted<K: Ord + std::fmt::Debug, V: std::fmt::Debug>(map: &HashMap<K, V>) -> String {
            format!(
                "{:?}",
                map.iter().collect::<std::collections::BTreeMap<_, _>>()
            )
        }
        let fields = [
            (
                "backend_ids",
                sorted(&self.backend_ids),
                sorted(&other.backend_ids),
            ),
            (
                "table_named",
                sorted(&self.table_named),
                sorted(&other.table_named),
            ),
            (
                "table_users",
                sorted(&self.table_users),
                sorted(&other.table_users),
            ),
            (
                "table_services",
                format!(
                    "{:?}",
                    self.table_services
                        .iter()
                        .map(|(t, s)| (t, s.iter().collect::<std::collections::BTreeMap<_, _>>()))
                        .collect::<std::collections::BTreeMap<_, _>>()
                ),
                format!(
                    "{:?}",
                    other
                        .table_services
                        .iter()
                        .map(|(t, s)| (t, s.iter().collect::<std::collections::BTreeMap<_, _>>()))
                        .collect::<std::collections::BTreeMap<_, _>>()
                ),
            ),
            (
                "backend_tables",
                sorted(&self.backend_tables),
                sorted(&other.backend_tables),
            ),
            (
                "service_frontends",
                sorted(&self.service_frontends),
                sorted(&other.service_frontends),
            ),
            (
                "service_names",
                sorted(&self.service_names),
                sorted(&other.service_names),
            ),
            (
                "free_backends",
                format!("{:?}", self.free_backends.sorted()),
                format!("{:?}", other.free_backends.sorted()),
            ),
            (
                "free_tables",
                format!("{:?}", self.free_tables.sorted()),
                format!("{:?}", other.free_tables.sorted()),
            ),
            (
                "free_services",
                format!("{:?}", self.free_services.sorted()),
                format!("{:?}", other.free_services.sorted()),
            ),
        ];
        fields.into_iter().filter(|(_, a, b)| a != b).collect()
    }
}

fn decrement(counts: &mut HashMap<u32, u32>, key: u32) {
    if let Some(count) = counts.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&key);
        }
    }
}
