//! The live connections per backend that least-connections compares
//! (`lb_common::algorithm::BACKEND_CONNECTIONS`): read by operators and
//! tests, rewritten whole by the connection table's sweep.

use lb_common::algorithm::BACKEND_CONNECTIONS;

use super::{KernelMaps, map_err};
use crate::datapath::MapsError;

impl KernelMaps {
    /// The count the datapath holds for `backend_id` (signed: a decrement
    /// after a rewrite may take it below zero until the next sweep).
    pub fn backend_connections(&self, backend_id: u32) -> Result<i64, MapsError> {
        let count = self
            .backend_connections
            .get(&backend_id, 0)
            .map_err(map_err(BACKEND_CONNECTIONS, "lookup"))?;
        Ok(count as i64)
    }

    /// Entries of the counter map: one per possible backend id.
    pub fn backend_connections_capacity(&self) -> u32 {
        self.backend_connections.len()
    }

    /// Replaces every count with `counts` (index: backend id; ids past its
    /// end are set to 0), in one batch update where the kernel has it.
    pub fn set_backend_connections(&mut self, counts: &[u64]) -> Result<(), MapsError> {
        let capacity = self.backend_connections.len() as usize;
        let mut all = counts.to_vec();
        all.resize(capacity, 0);
        let map = aya::maps::IterableMap::<u32, u64>::map(&self.backend_connections);
        match super::batch::write_values(map, 0, &all) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(err) => {
                return Err(MapsError::Invalid(format!(
                    "map {BACKEND_CONNECTIONS}: batch update failed: {err}"
                )));
            }
        }
        for (id, count) in (0u32..).zip(&all) {
            self.backend_connections
                .set(id, count, 0)
                .map_err(map_err(BACKEND_CONNECTIONS, "update"))?;
        }
        Ok(())
    }
}
