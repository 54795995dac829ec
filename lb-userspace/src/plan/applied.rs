//! What the agent knows the maps hold: read from the maps at start-up
//! (adopting the live Maglev tables it can recognise), then kept in step
//! with every applied plan.

use std::collections::{BTreeMap, BTreeSet};

use lb_common::{Backend4, Frontend4Key, FrontendValue, ServiceInfo, maglev::table_size};

use super::{Plan, index::Index, maglev};
use crate::{
    datapath::{
        DatapathMaps, MapsError,
        codec::{backend_from_value, service_from_info},
    },
    model::{Backend, ServicePortName},
};

/// What the agent knows the maps hold. Rebuilt from the maps at start-up
/// (`Applied::read`), then kept in step by `apply`.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub frontends: BTreeMap<Frontend4Key, FrontendValue>,
    pub backends: BTreeMap<u32, Backend4>,
    /// Tables whose contents the agent knows (it wrote them, or recognised
    /// them at start-up), by id, with the backend set each holds. An id
    /// belongs to the one Service port whose frontends select from it
    /// (`Index::exclusive_to`), for as long as they do.
    pub(super) tables: BTreeMap<u32, Vec<Backend>>,
    /// Table ids in use whose contents are unknown (found in the maps at
    /// start-up), with the backend ids they name: never written to until
    /// nothing references them.
    pub(super) foreign_tables: BTreeMap<u32, BTreeSet<u32>>,
    /// Freed by the previous plan; reusable from the next one on.
    pub(super) quarantined_tables: BTreeSet<u32>,
    /// Service port ids, and the service map's values for them.
    pub(super) services: BTreeMap<ServicePortName, u32>,
    pub service_infos: BTreeMap<u32, ServiceInfo>,
    /// Who references what, and the free ids: kept in step by `record`.
    pub(super) index: Index,
    /// (service id, range): the source-range trie.
    pub source_ranges: BTreeSet<(u32, crate::model::SourceRange)>,
    /// The allocated ClusterIPs and the service CIDRs (`service_cidrs`).
    pub cluster_ips: BTreeSet<std::net::Ipv4Addr>,
    pub service_cidrs: BTreeSet<crate::model::SourceRange>,
    /// Backend ids the datapath has room for (`--max-backends`).
    pub(super) max_backends: BackendCapacity,
}

/// Backend ids the datapath has room for: 1 to this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BackendCapacity(pub(super) u32);

impl Default for BackendCapacity {
    fn default() -> Self {
        BackendCapacity(lb_common::DEFAULT_MAX_BACKENDS)
    }
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
            .filter_map(|(id, info)| Some((service_from_info(info)?.0, *id)))
            .collect();
        let mut applied = Applied {
            backends: maps.backends()?.into_iter().collect(),
            source_ranges: maps.source_ranges()?.into_iter().collect(),
            cluster_ips: maps.cluster_ips()?.into_iter().collect(),
            service_cidrs: maps.service_cidrs()?.into_iter().collect(),
            services,
            service_infos,
            max_backends: BackendCapacity(maps.max_backends()),
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
                    applied.tables.insert(table_id, backends);
                }
                None => {
                    let named = slots.into_iter().collect();
                    applied.foreign_tables.insert(table_id, named);
                }
            }
        }
        applied.frontends = frontends;
        applied.index = Index::build(&applied, maps.max_tables());
        Ok(applied)
    }

    /// Reads the maps again after an apply failed part way, keeping in
    /// quarantine every table `previous` had in use that nothing references
    /// now: a flip that did happen may have left a packet indexing its old
    /// table, which must not be rewritten in the very next plan.
    pub fn reread(maps: &dyn DatapathMaps, previous: &Applied) -> Result<Applied, MapsError> {
        let mut fresh = Applied::read(maps)?;
        let in_use = fresh.table_ids_in_use();
        fresh.quarantined_tables = previous
            .table_ids_in_use()
            .into_iter()
            .filter(|id| !in_use.contains(id))
            .collect();
        fresh.index = Index::build(&fresh, maps.max_tables());
        Ok(fresh)
    }

    /// The Maglev tables whose contents this agent knows (it wrote them, or
    /// recognised them at start-up), by id, with the backend set of each:
    /// what a resync compares with a fresh read of the maps.
    pub fn known_tables(&self) -> BTreeMap<u32, &[Backend]> {
        self.tables
            .iter()
            .map(|(id, backends)| (*id, backends.as_slice()))
            .collect()
    }

    /// Whether `slots` are exactly what this agent knows table `table_id`
    /// holds (a resync's spot check of one table).
    pub fn holds_table(&self, table_id: u32, slots: &[u32]) -> bool {
        let known = self.tables.get(&table_id);
        known.is_some_and(|backends| self.recognise_table(slots).as_ref() == Some(backends))
    }

    /// The backend set whose Maglev table is exactly `slots`, if any.
    fn recognise_table(&self, slots: &[u32]) -> Option<Vec<Backend>> {
        if slots.is_empty() {
            return None;
        }
        let ids: BTreeSet<u32> = slots.iter().copied().collect();
        let mut backends: Vec<(Backend, u32)> = ids
            .iter()
            .map(|id| Some((backend_from_value(self.backends.get(id)?)?, *id)))
            .collect::<Option<_>>()?;
        backends.sort();
        let set: Vec<Backend> = backends.iter().map(|(b, _)| *b).collect();
        let expected = maglev::table(&set, table_size(set.len() as u32));
        let same = expected.len() == slots.len()
            && expected
                .iter()
                .zip(slots)
                .all(|(index, id)| backends[*index as usize].1 == *id);
        same.then_some(set)
    }

    pub(super) fn table_ids_in_use(&self) -> BTreeSet<u32> {
        self.tables
            .keys()
            .chain(self.foreign_tables.keys())
            .chain(&self.quarantined_tables)
            .copied()
            .collect()
    }

    /// The backend ids a live table names.
    pub(super) fn table_backend_ids(&self, table_id: u32) -> &[u32] {
        self.index
            .table_named
            .get(&table_id)
            .map_or(&[], Vec::as_slice)
    }

    /// Whether the indexes kept by `record` are what indexing the whole
    /// state again gives (the property tests check it after every apply).
    #[cfg(test)]
    pub(crate) fn index_is_consistent(&self, max_tables: u32) -> bool {
        let differences = self.index.differences(&Index::build(self, max_tables));
        if !differences.is_empty() {
            eprintln!("kept index differs from a rebuilt one: {differences:#?}");
        }
        differences.is_empty()
    }

    /// Records an applied plan, in time proportional to the plan.
    pub(super) fn record(&mut self, plan: &Plan) {
        let mut index = std::mem::take(&mut self.index);
        for table_id in &plan.release_tables {
            self.tables.remove(table_id);
            self.foreign_tables.remove(table_id);
        }
        // An id handed to another name (a Service port that took over a
        // frontend carrying it) is no longer the old name's: two ports
        // sharing one id would overwrite each other's service entry.
        for (name, id) in &plan.new_services {
            if let Some(previous) = index.service_names.get(id)
                && previous != name
                && self.services.get(previous) == Some(id)
            {
                self.services.remove(previous);
            }
        }
        let ended_quarantine = std::mem::take(&mut self.quarantined_tables);
        index.record(plan, self, &ended_quarantine);
        let touched = plan.remove_frontends.iter();
        let touched = touched.chain(plan.set_frontends.iter().map(|(key, _)| key));
        let maybe_unused: Vec<u32> = touched
            .filter_map(|key| self.frontends.get(key).map(|fe| fe.service_id))
            .chain(plan.remove_services.iter().copied())
            .collect();
        self.service_infos.extend(plan.set_services.iter().copied());
        for id in &plan.remove_services {
            self.service_infos.remove(id);
            if let Some(name) = index.service_names.remove(id)
                && self.services.get(&name) == Some(id)
            {
                self.services.remove(&name);
            }
        }
        self.backends.extend(plan.set_backends.iter().copied());
        for (id, _) in &plan.remove_backends {
            self.backends.remove(id);
        }
        self.source_ranges
            .extend(plan.set_source_ranges.iter().copied());
        for entry in &plan.remove_source_ranges {
            self.source_ranges.remove(entry);
        }
        self.cluster_ips
            .extend(plan.set_cluster_ips.iter().copied());
        for addr in &plan.remove_cluster_ips {
            self.cluster_ips.remove(addr);
        }
        self.service_cidrs
            .extend(plan.set_service_cidrs.iter().copied());
        for cidr in &plan.remove_service_cidrs {
            self.service_cidrs.remove(cidr);
        }
        self.frontends.extend(plan.set_frontends.iter().copied());
        for key in &plan.remove_frontends {
            self.frontends.remove(key);
        }
        for table in &plan.write_tables {
            // A foreign table its Service port rewrote is known now.
            self.foreign_tables.remove(&table.table_id);
            self.tables.insert(table.table_id, table.backends.clone());
        }
        self.quarantined_tables = plan.release_tables.iter().copied().collect();
        self.services.extend(
            plan.new_services
                .iter()
                .filter(|(_, id)| !plan.remove_services.contains(id))
                .cloned(),
        );
        index.release_unused_services(maybe_unused, self);
        self.index = index;
    }
}
