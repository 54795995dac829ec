//! [`DatapathMaps`] as plain collections: the datapath `plan`/`apply` are
//! tested against, and the empty datapath a dry run plans against.
//!
//! It checks the write-order invariants that keep every packet on a whole
//! state (a table is never rewritten while a frontend uses it, a frontend
//! never names a table, backend or service that is not written yet, nothing
//! is removed while referenced) and panics when a write breaks one: that is
//! a bug in the writer, which this double exists to catch. It records the
//! order of writes, and can fail a chosen write (`fail_after`) to test what
//! an interrupted apply leaves behind.

use std::collections::{BTreeMap, BTreeSet};

use lb_common::maglev::valid_size;
use lb_common::{Backend4, DEFAULT_MAX_TABLES, Frontend4Key, FrontendValue, ServiceInfo};

use super::{
    DatapathMaps, MapsError, PurgeScope,
    codec::{backend_identity, describe_frontend, key_address},
};
use crate::model::SourceRange;

#[derive(Clone, Debug)]
pub struct MemoryMaps {
    pub services: BTreeMap<u32, ServiceInfo>,
    pub frontends: BTreeMap<Frontend4Key, FrontendValue>,
    pub backends: BTreeMap<u32, Backend4>,
    pub tables: BTreeMap<u32, Vec<u32>>,
    /// Every successful write, in order: `service 1`, `backend 2`,
    /// `table 0`, `frontend 80` (its port), and `-...` for removals.
    pub log: Vec<String>,
    /// Backends whose connection entries were purged, in order.
    pub purged: Vec<Backend4>,
    /// (service id, backend) of each UDP purge of a Service port's flows.
    pub purged_flows: Vec<(u32, Backend4)>,
    /// The scope of each of those purges, in order.
    pub purge_scopes: Vec<PurgeScope>,
    /// (service id, backend id) pairs whose affinity entries were purged.
    pub purged_affinity: Vec<(u32, u32)>,
    /// The masquerade address last set.
    pub snat_address: Option<std::net::Ipv4Addr>,
    /// (service id, range): the source-range trie.
    pub source_ranges: BTreeSet<(u32, SourceRange)>,
    pub cluster_ips: BTreeSet<std::net::Ipv4Addr>,
    pub service_cidrs: BTreeSet<SourceRange>,
    max_tables: u32,
    /// Backend ids the maps have room for (tests lower it).
    pub max_backends: u32,
    writes: usize,
    fail_at: Option<usize>,
}

impl Default for MemoryMaps {
    fn default() -> Self {
        MemoryMaps::new(DEFAULT_MAX_TABLES)
    }
}

impl MemoryMaps {
    /// Empty maps with room for `max_tables` Maglev tables.
    pub fn new(max_tables: u32) -> MemoryMaps {
        MemoryMaps {
            services: BTreeMap::new(),
            frontends: BTreeMap::new(),
            backends: BTreeMap::new(),
            tables: BTreeMap::new(),
            log: Vec::new(),
            purged: Vec::new(),
            purged_flows: Vec::new(),
            purge_scopes: Vec::new(),
            purged_affinity: Vec::new(),
            snat_address: None,
            source_ranges: BTreeSet::new(),
            cluster_ips: BTreeSet::new(),
            service_cidrs: BTreeSet::new(),
            max_tables,
            max_backends: lb_common::DEFAULT_MAX_BACKENDS,
            writes: 0,
            fail_at: None,
        }
    }

    /// Lets the next `k` writes succeed and fails the one after, once (as
    /// a full map or a failing syscall would). A failing table write has
    /// written its first half, as a kernel array written slot by slot
    /// would have.
    pub fn fail_after(&mut self, k: usize) {
        self.fail_at = Some(self.writes + k);
    }

    /// Writes that succeeded so far.
    pub fn writes(&self) -> usize {
        self.writes
    }

    /// What a packet could meet that is not whole: a frontend naming a
    /// missing or partial table, a missing backend or a missing service.
    /// Empty when every frontend leads somewhere.
    pub fn dangling(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (key, fe) in &self.frontends {
            let name = describe_frontend(key);
            if !self.services.contains_key(&fe.service_id) {
                found.push(format!("{name} names missing service {}", fe.service_id));
            }
            let has_ranges = || {
                self.source_ranges
                    .iter()
                    .any(|(id, _)| *id == fe.service_id)
            };
            if fe.has_source_ranges() && !has_ranges() {
                found.push(format!("{name} filters sources without any range"));
            }
            if fe.backend_count == 0 {
                continue;
            }
            match self.tables.get(&fe.table_id) {
                Some(slots) if valid_size(slots.len() as u32) => {
                    let missing: BTreeSet<u32> = slots
                        .iter()
                        .filter(|id| !self.backends.contains_key(id))
                        .copied()
                        .collect();
                    if !missing.is_empty() {
                        found.push(format!("{name} can select missing backends {missing:?}"));
                    }
                }
                _ => found.push(format!("{name} names unwritten table {}", fe.table_id)),
            }
        }
        found
    }

    /// The table slots (backend ids) the frontend at `key` selects from;
    /// `None` when it has no backend.
    pub fn table_of(&self, key: &Frontend4Key) -> Option<&[u32]> {
        let fe = self.frontends.get(key)?;
        (fe.backend_count > 0).then(|| self.tables.get(&fe.table_id).map(Vec::as_slice))?
    }

    fn write(&mut self, entry: String) -> Result<(), MapsError> {
        if self.fail_at == Some(self.writes) {
            self.fail_at = None;
            return Err(MapsError::Invalid(format!("injected fault at {entry}")));
        }
        self.writes += 1;
        self.log.push(entry);
        Ok(())
    }

    fn live_tables(&self) -> impl Iterator<Item = u32> + '_ {
        self.frontends
            .values()
            .filter(|fe| fe.backend_count > 0)
            .map(|fe| fe.table_id)
    }

    fn referenced(&self, backend_id: u32) -> bool {
        self.live_tables()
            .filter_map(|table| self.tables.get(&table))
            .any(|slots| slots.contains(&backend_id))
    }
}

impl DatapathMaps for MemoryMaps {
    fn max_tables(&self) -> u32 {
        self.max_tables
    }

    fn max_backends(&self) -> u32 {
        self.max_backends
    }

    fn frontends(&self) -> Result<Vec<(Frontend4Key, FrontendValue)>, MapsError> {
        Ok(self.frontends.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn backends(&self) -> Result<Vec<(u32, Backend4)>, MapsError> {
        Ok(self.backends.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn set_backend(&mut self, id: u32, backend: &Backend4) -> Result<(), MapsError> {
        if let Some(old) = self.backends.get(&id) {
            assert!(
                backend_identity(old) == backend_identity(backend) || !self.referenced(id),
                "backend {id} given another address while a live table names it"
            );
        }
        self.write(format!("backend {id}"))?;
        self.backends.insert(id, *backend);
        Ok(())
    }

    fn remove_backend(&mut self, id: u32) -> Result<(), MapsError> {
        assert!(
            !self.referenced(id),
            "backend {id} removed while a live table names it"
        );
        self.write(format!("-backend {id}"))?;
        self.backends.remove(&id);
        Ok(())
    }

    fn write_table(&mut self, table_id: u32, slots: &[u32]) -> Result<(), MapsError> {
        if !valid_size(slots.len() as u32) || table_id >= self.max_tables {
            return Err(MapsError::Invalid(format!(
                "table {table_id} of {} slots does not fit",
                slots.len()
            )));
        }
        // The invariant that keeps every packet on its own Service: a table
        // rewritten while referenced is referenced by one Service port only
        // (a packet that read one of its frontends gets that Service's old
        // table or its new one).
        let users: BTreeSet<u32> = self
            .frontends
            .values()
            .filter(|fe| fe.backend_count > 0 && fe.table_id == table_id)
            .map(|fe| fe.service_id)
            .collect();
        assert!(
            users.len() <= 1,
            "table {table_id} rewritten while services {users:?} select from it"
        );
        for id in slots {
            assert!(
                self.backends.contains_key(id),
                "table names backend {id} before it exists"
            );
        }
        // A failed write leaves the table as it was, as the kernel's swap
        // of a whole new inner map does.
        self.write(format!("table {table_id}"))?;
        self.tables.insert(table_id, slots.to_vec());
        Ok(())
    }

    fn release_table(&mut self, table_id: u32) -> Result<(), MapsError> {
        assert!(
            !self.live_tables().any(|live| live == table_id),
            "table {table_id} released while referenced"
        );
        self.write(format!("-table {table_id}"))?;
        self.tables.remove(&table_id);
        Ok(())
    }

    fn read_table(&self, table_id: u32) -> Result<Vec<u32>, MapsError> {
        // A table never written reads empty, as the kernel's (no pin).
        Ok(self.tables.get(&table_id).cloned().unwrap_or_default())
    }

    fn set_frontend(&mut self, key: &Frontend4Key, value: &FrontendValue) -> Result<(), MapsError> {
        if value.backend_count > 0 {
            assert!(
                self.tables
                    .get(&value.table_id)
                    .is_some_and(|t| valid_size(t.len() as u32)),
                "frontend flipped to an unwritten table"
            );
        }
        assert!(
            self.services.contains_key(&value.service_id),
            "frontend names an unwritten service"
        );
        self.write(format!("frontend {}", key_address(key).port()))?;
        self.frontends.insert(*key, *value);
        Ok(())
    }

    fn services(&self) -> Result<Vec<(u32, ServiceInfo)>, MapsError> {
        Ok(self.services.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn set_service(&mut self, id: u32, info: &ServiceInfo) -> Result<(), MapsError> {
        self.write(format!("service {id}"))?;
        self.services.insert(id, *info);
        Ok(())
    }

    fn remove_service(&mut self, id: u32) -> Result<(), MapsError> {
        assert!(
            !self.frontends.values().any(|fe| fe.service_id == id),
            "service {id} removed while referenced"
        );
        self.write(format!("-service {id}"))?;
        self.services.remove(&id);
        Ok(())
    }

    fn remove_frontend(&mut self, key: &Frontend4Key) -> Result<(), MapsError> {
        self.write(format!("-frontend {}", key_address(key).port()))?;
        self.frontends.remove(key);
        Ok(())
    }

    fn purge_connections_to(&mut self, backends: &[Backend4]) -> Result<usize, MapsError> {
        self.write(format!("purge {}", backends.len()))?;
        self.purged.extend_from_slice(backends);
        Ok(backends.len())
    }

    fn purge_service_connections(
        &mut self,
        flows: &[(u32, Backend4)],
        scope: PurgeScope,
    ) -> Result<usize, MapsError> {
        self.write(format!("purge {}", flows.len()))?;
        self.purged_flows.extend_from_slice(flows);
        self.purge_scopes.push(scope);
        Ok(flows.len())
    }

    fn purge_affinity(&mut self, pairs: &[(u32, u32)]) -> Result<usize, MapsError> {
        self.write(format!("purge affinity {}", pairs.len()))?;
        self.purged_affinity.extend_from_slice(pairs);
        Ok(pairs.len())
    }

    fn set_snat_address(&mut self, addr: Option<std::net::Ipv4Addr>) -> Result<(), MapsError> {
        self.snat_address = addr;
        Ok(())
    }

    fn source_ranges(&self) -> Result<Vec<(u32, SourceRange)>, MapsError> {
        Ok(self.source_ranges.iter().copied().collect())
    }

    fn set_source_range(&mut self, service_id: u32, range: &SourceRange) -> Result<(), MapsError> {
        self.write(format!("range {service_id} {range}"))?;
        self.source_ranges.insert((service_id, *range));
        Ok(())
    }

    fn remove_source_range(
        &mut self,
        service_id: u32,
        range: &SourceRange,
    ) -> Result<(), MapsError> {
        self.write(format!("-range {service_id} {range}"))?;
        self.source_ranges.remove(&(service_id, *range));
        Ok(())
    }

    // sctp and service CIDRs
    fn cluster_ips(&self) -> Result<Vec<std::net::Ipv4Addr>, MapsError> {
        Ok(self.cluster_ips.iter().copied().collect())
    }

    fn set_cluster_ip(&mut self, addr: std::net::Ipv4Addr) -> Result<(), MapsError> {
        self.write(format!("clusterip {addr}"))?;
        self.cluster_ips.insert(addr);
        Ok(())
    }

    fn remove_cluster_ip(&mut self, addr: std::net::Ipv4Addr) -> Result<(), MapsError> {
        self.write(format!("-clusterip {addr}"))?;
        self.cluster_ips.remove(&addr);
        Ok(())
    }

    fn service_cidrs(&self) -> Result<Vec<SourceRange>, MapsError> {
        Ok(self.service_cidrs.iter().copied().collect())
    }

    fn set_service_cidr(&mut self, cidr: &SourceRange) -> Result<(), MapsError> {
        self.write(format!("cidr {cidr}"))?;
        self.service_cidrs.insert(*cidr);
        Ok(())
    }

    fn remove_service_cidr(&mut self, cidr: &SourceRange) -> Result<(), MapsError> {
        self.write(format!("-cidr {cidr}"))?;
        self.service_cidrs.remove(cidr);
        Ok(())
    }
}
