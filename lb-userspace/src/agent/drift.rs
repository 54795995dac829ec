//! Drift: what the maps hold that the agent did not write, found by the
//! periodic resync comparing a fresh read of the maps with what the agent
//! knows it wrote. The next plan, made from the fresh read, rewrites it;
//! the count is `lb_resync_repaired_entries_total{map}` once that plan is
//! applied. Something else writing the pinned maps (an operator with
//! bpftool, another agent on the same pin directory, a bug) shows here
//! instead of staying until the Service changes.
//!
//! Reading every Maglev table back costs a kernel copy per slot (1.8 s for
//! 5,000 tables on this project's VM), so a resync first compares the
//! frontends, backends and services (cheap) and spot-checks
//! [`TABLES_PER_RESYNC`] tables, a different run of them each time; only
//! when something differs does it read everything back. A table changed
//! behind the agent's back is found within (tables / 128) sync periods.

use std::collections::BTreeMap;

use crate::{
    datapath::{DatapathMaps, MapsError},
    plan::Applied,
};

/// Maglev tables read back by each resync's spot check.
pub const TABLES_PER_RESYNC: usize = 128;

/// Which tables the next spot check reads: the run after the last one.
#[derive(Debug, Default)]
pub struct SpotCheck {
    after: Option<u32>,
}

impl SpotCheck {
    /// Whether the maps still hold what `applied` says (frontends,
    /// backends, services, and this round's run of tables).
    pub fn unchanged(
        &mut self,
        maps: &dyn DatapathMaps,
        applied: &Applied,
    ) -> Result<bool, MapsError> {
        if !same(&applied.frontends, maps.frontends()?)
            || !same(&applied.backends, maps.backends()?)
            || !same(&applied.service_infos, maps.services()?)
            || !same_ranges(applied, maps)?
            || !same_service_cidr_maps(applied, maps)?
        {
            return Ok(false);
        }
        let known: Vec<u32> = applied.known_tables().into_keys().collect();
        let start = self
            .after
            .map_or(0, |after| known.partition_point(|id| *id <= after));
        let run: Vec<u32> = known
            .iter()
            .cycle()
            .skip(start)
            .take(TABLES_PER_RESYNC.min(known.len()))
            .copied()
            .collect();
        for table_id in &run {
            if !applied.holds_table(*table_id, &maps.read_table(*table_id)?) {
                return Ok(false);
            }
        }
        self.after = run.last().copied();
        Ok(true)
    }
}

/// Entries found changed, per map (the metrics' `map` label).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drift {
    pub frontends: u64,
    pub backends: u64,
    pub maglev_tables: u64,
    pub services: u64,
}

impl Drift {
    /// `known`: what the agent wrote; `fresh`: what the maps hold now.
    pub fn between(known: &Applied, fresh: &Applied) -> Drift {
        let fresh_tables = fresh.known_tables();
        let maglev_tables = known
            .known_tables()
            .iter()
            .filter(|(id, backends)| fresh_tables.get(id) != Some(backends))
            .count() as u64;
        Drift {
            frontends: differing(&known.frontends, &fresh.frontends),
            backends: differing(&known.backends, &fresh.backends),
            maglev_tables,
            services: differing(&known.service_infos, &fresh.service_infos),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_map().iter().all(|(_, n)| *n == 0)
    }

    /// Each map's count, by the metrics' label.
    pub fn by_map(&self) -> [(&'static str, u64); 4] {
        [
            ("frontends", self.frontends),
            ("backends", self.backends),
            ("maglev_tables", self.maglev_tables),
            ("services", self.services),
        ]
    }
}

/// Whether the source-range trie holds what the agent wrote.
fn same_ranges(applied: &Applied, maps: &dyn DatapathMaps) -> Result<bool, MapsError> {
    let read: std::collections::BTreeSet<_> = maps.source_ranges()?.into_iter().collect();
    Ok(read == applied.source_ranges)
}

/// Whether the allocated-ClusterIP hash and the service-CIDR trie hold
/// what the agent wrote.
fn same_service_cidr_maps(applied: &Applied, maps: &dyn DatapathMaps) -> Result<bool, MapsError> {
    let cluster_ips: std::collections::BTreeSet<_> = maps.cluster_ips()?.into_iter().collect();
    let cidrs: std::collections::BTreeSet<_> = maps.service_cidrs()?.into_iter().collect();
    Ok(cluster_ips == applied.cluster_ips && cidrs == applied.service_cidrs)
}

/// Whether a map read back holds exactly `known` (its order is the
/// kernel's hash order).
fn same<K: Ord, V: PartialEq>(known: &BTreeMap<K, V>, read: Vec<(K, V)>) -> bool {
    known.len() == read.len() && *known == read.into_iter().collect::<BTreeMap<K, V>>()
}

/// Keys present on one side only, or with another value.
fn differing<K: Ord, V: PartialEq>(a: &BTreeMap<K, V>, b: &BTreeMap<K, V>) -> u64 {
    let changed_or_gone = a.iter().filter(|(k, v)| b.get(k) != Some(*v)).count();
    let added = b.keys().filter(|k| !a.contains_key(k)).count();
    (changed_or_gone + added) as u64
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{datapath::MemoryMaps, model::SourceRange};

    /// A range removed behind the agent's back is drift: the resync reads
    /// the maps again and its plan writes the range back.
    #[test]
    fn a_source_range_removed_behind_the_agent_is_drift() {
        let mut maps = MemoryMaps::new(8);
        let range = SourceRange::new(Ipv4Addr::new(203, 0, 113, 0), 24).unwrap();
        maps.set_source_range(1, &range).unwrap();
        let applied = Applied::read(&maps).unwrap();
        assert!(SpotCheck::default().unchanged(&maps, &applied).unwrap());
        maps.remove_source_range(1, &range).unwrap();
        assert!(!SpotCheck::default().unchanged(&maps, &applied).unwrap());
    }

    /// So is an allocated ClusterIP or a service CIDR removed behind it.
    #[test]
    fn a_cluster_ip_or_service_cidr_removed_behind_the_agent_is_drift() {
        let mut maps = MemoryMaps::new(8);
        let addr = Ipv4Addr::new(10, 96, 0, 10);
        let cidr = SourceRange::new(Ipv4Addr::new(10, 96, 0, 0), 12).unwrap();
        maps.set_cluster_ip(addr).unwrap();
        maps.set_service_cidr(&cidr).unwrap();
        let applied = Applied::read(&maps).unwrap();
        assert!(SpotCheck::default().unchanged(&maps, &applied).unwrap());
        maps.remove_cluster_ip(addr).unwrap();
        assert!(!SpotCheck::default().unchanged(&maps, &applied).unwrap());
        maps.set_cluster_ip(addr).unwrap();
        maps.remove_service_cidr(&cidr).unwrap();
        assert!(!SpotCheck::default().unchanged(&maps, &applied).unwrap());
    }
}
