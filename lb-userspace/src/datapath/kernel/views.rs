//! Read-only views of the maps for operator commands: counters summed over
//! CPUs, connection-table and socket-translation entries, Maglev tables.

use lb_common::{
    CT4, Ct4Key, Ct4Value, MAGLEV, MAGLEV_TABLE_SIZE, SERVICE_STATS, SOCK_REVNAT4, STATS,
    ServiceCounters, SockRevNat4Key, SockRevNat4Value, reason::Reason,
};

use super::{KernelMaps, map_err};
use crate::datapath::MapsError;

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

    /// Every connection-table entry (both directions).
    pub fn connections(&self) -> Result<Vec<(Ct4Key, Ct4Value)>, MapsError> {
        self.ct
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(CT4, "iterate"))
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

    /// The backend ids of one Maglev table.
    pub fn table(&self, table_id: u32) -> Result<Vec<u32>, MapsError> {
        self.check_table(table_id)?;
        let base = table_id * MAGLEV_TABLE_SIZE;
        (base..base + MAGLEV_TABLE_SIZE)
            .map(|i| self.maglev.get(&i, 0).map_err(map_err(MAGLEV, "lookup")))
            .collect()
    }
}
