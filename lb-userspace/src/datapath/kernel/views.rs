//! Read-only views of the maps for operator commands: counters summed over
//! CPUs, connection-table and socket-translation entries, Maglev tables.

use std::collections::BTreeSet;

use lb_common::{
    BACKENDS4, CT4, CT4_NEW, Ct4Key, Ct4Value, MAX_SERVICES, SERVICE_STATS, SERVICES, SOCK_REVNAT4,
    STATS, ServiceCounters, SockRevNat4Key, SockRevNat4Value, reason::Reason,
};

use super::{KernelMaps, map_err};
use crate::datapath::{DatapathMaps, MapsError};

/// How full one map is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MapFill {
    /// `frontends`, `backends`, `maglev_tables`, `services`,
    /// `connections`, `socket_translations`, `affinity`, `source_ranges`,
    /// `cluster_ips` or `service_cidrs`.
    pub map: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

impl KernelMaps {
    /// The counters of one service port, summed over CPUs.
    pub fn service_counters(&self, service_id: u32) -> Result<ServiceCounters, MapsError> {
        let values = self
            .service_stats
            .get(&service_id, 0)
            .map_err(map_err(SERVICE_STATS, "lookup"))?;
        Ok(values
            .iter()
            .fold(ServiceCounters::default(), |sum, c| ServiceCounters {
                new_flows: sum.new_flows.wrapping_add(c.new_flows),
                established: sum.established.wrapping_add(c.established),
                rejected: sum.rejected.wrapping_add(c.rejected),
                dropped: sum.dropped.wrapping_add(c.dropped),
            }))
    }

    /// Every counter, summed over CPUs, in reason order.
    pub fn stats(&self) -> Result<Vec<(Reason, u64)>, MapsError> {
        Reason::ALL
            .iter()
            .map(|&reason| {
                let values = self
                    .stats
                    .get(&(reason as u32), 0)
                    .map_err(map_err(STATS, "lookup"))?;
                Ok((reason, values.iter().copied().fold(0u64, u64::wrapping_add)))
            })
            .collect()
    }

    /// One counter, summed over CPUs.
    pub fn stat(&self, reason: Reason) -> Result<u64, MapsError> {
        let values = self
            .stats
            .get(&(reason as u32), 0)
            .map_err(map_err(STATS, "lookup"))?;
        Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
    }

    /// Entries and capacity of every map that fills up. Keys are walked
    /// (values are not read) except the frontends', whose values name the
    /// Maglev tables in use.
    pub fn fill(&self) -> Result<Vec<MapFill>, MapsError> {
        let count = |keys: Result<usize, aya::maps::MapError>, map| {
            keys.map(|n| n as u64).map_err(map_err(map, "iterate"))
        };
        let frontends = self.frontends()?;
        let tables: BTreeSet<u32> = frontends
            .iter()
            .filter(|(_, fe)| fe.backend_count > 0)
            .map(|(_, fe)| fe.table_id)
            .collect();
        let fill = |map, entries, capacity: u32| MapFill {
            map,
            entries,
            capacity: u64::from(capacity),
        };
        Ok(vec![
            fill("frontends", frontends.len() as u64, self.frontends_capacity),
            fill(
                "backends",
                count(keys_in(self.backends.keys()), BACKENDS4)?,
                self.backends_capacity,
            ),
            fill("maglev_tables", tables.len() as u64, self.max_tables),
            fill(
                "services",
                count(keys_in(self.services.keys()), SERVICES)?,
                MAX_SERVICES,
            ),
            fill("connections", self.connections_in(false)?, self.ct_capacity),
            fill(
                "new_connections",
                self.connections_in(true)?,
                self.ct_new_capacity,
            ),
            fill(
                "socket_translations",
                count(keys_in(self.sock_revnat.keys()), SOCK_REVNAT4)?,
                self.sock_revnat_capacity,
            ),
            // session affinity
            fill(
                "affinity",
                count(keys_in(self.affinity.keys()), lb_common::AFFINITY4)?,
                self.affinity_capacity,
            ),
            // loadBalancerSourceRanges
            fill(
                "source_ranges",
                count(
                    keys_in(self.source_ranges.keys()),
                    lb_common::SOURCE_RANGES4,
                )?,
                lb_common::MAX_SOURCE_RANGES,
            ),
            // sctp and service CIDRs
            fill(
                "cluster_ips",
                count(
                    keys_in(self.cluster_ips.keys()),
                    lb_common::service_cidr::CLUSTER_IPS4,
                )?,
                lb_common::service_cidr::MAX_CLUSTER_IPS,
            ),
            fill(
                "service_cidrs",
                count(
                    keys_in(self.service_cidrs.keys()),
                    lb_common::service_cidr::SERVICE_CIDRS4,
                )?,
                lb_common::service_cidr::MAX_SERVICE_CIDRS,
            ),
            // fragments
            fill(
                "fragments",
                count(keys_in(self.fragments.keys()), lb_common::frag::FRAGS4)?,
                self.fragments_capacity,
            ),
        ])
    }

    /// Every connection-table entry (both directions, both tables: assured
    /// flows first). An entry that moves or goes under the walk (a
    /// promotion, an eviction) is skipped, not an error.
    pub fn connections(&self) -> Result<Vec<(Ct4Key, Ct4Value)>, MapsError> {
        let mut out = entries_in(self.ct.iter()).map_err(map_err(CT4, "iterate"))?;
        out.extend(entries_in(self.ct_new.iter()).map_err(map_err(CT4_NEW, "iterate"))?);
        Ok(out)
    }

    /// Every socket reverse-translation entry.
    pub fn socket_translations(
        &self,
    ) -> Result<Vec<(SockRevNat4Key, SockRevNat4Value)>, MapsError> {
        self.sock_revnat
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(SOCK_REVNAT4, "iterate"))
    }

    /// The backend ids of one Maglev table (see `maglev`).
    pub fn table(&self, table_id: u32) -> Result<Vec<u32>, MapsError> {
        self.read_maglev_table(table_id)
    }
}

/// What a map walk yields, skipping keys that vanish under it.
fn entries_in<K, V>(
    entries: impl Iterator<Item = Result<(K, V), aya::maps::MapError>>,
) -> Result<Vec<(K, V)>, aya::maps::MapError> {
    let mut out = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => out.push(entry),
            Err(aya::maps::MapError::KeyNotFound) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(out)
}

/// How many keys a map walk yields; a key that vanishes under the walk (an
/// LRU eviction) is not an error.
fn keys_in<K>(
    keys: impl Iterator<Item = Result<K, aya::maps::MapError>>,
) -> Result<usize, aya::maps::MapError> {
    let mut count = 0;
    for key in keys {
        match key {
            Ok(_) => count += 1,
            Err(aya::maps::MapError::KeyNotFound) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(count)
}
