//! The live connections per backend that least-connections compares
//! (`lb_common::algorithm::BACKEND_CONNECTIONS`): read by operators and
//! tests, rewritten whole by the connection table's sweep.

use std::collections::BTreeMap;

use lb_common::algorithm::BACKEND_CONNECTIONS;

use super::{KernelMaps, map_err};
use crate::datapath::MapsError;

/// Ids written per batch update of the counts (512 KiB of values).
const WRITE_CHUNK: u32 = 65_536;

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

    /// Replaces every count with `counts` (by backend id; every other id
    /// is set to 0), a chunk of ids at a time: one batch update each where
    /// the kernel has it. Chunks keep the agent's memory flat: the whole
    /// map at once was three copies of 1,048,576 ids (20 MiB) at each sweep.
    pub fn set_backend_connections(
        &mut self,
        counts: &BTreeMap<u32, u64>,
    ) -> Result<(), MapsError> {
        let capacity = self.backend_connections.len();
        let mut chunk = Vec::with_capacity(WRITE_CHUNK as usize);
        for first in (0..capacity).step_by(WRITE_CHUNK as usize) {
            let end = capacity.min(first.saturating_add(WRITE_CHUNK));
            chunk.clear();
            chunk.resize((end - first) as usize, 0u64);
            for (id, count) in counts.range(first..end) {
                chunk[(id - first) as usize] = *count;
            }
            self.write_backend_connections(first, &chunk)?;
        }
        Ok(())
    }

    /// Writes `counts` at ids `first..`.
    fn write_backend_connections(&mut self, first: u32, counts: &[u64]) -> Result<(), MapsError> {
        let map = aya::maps::IterableMap::<u32, u64>::map(&self.backend_connections);
        match super::batch::write_values(map, first, counts) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(err) => {
                return Err(MapsError::Invalid(format!(
                    "map {BACKEND_CONNECTIONS}: batch update failed: {err}"
                )));
            }
        }
        for (id, count) in (first..).zip(counts) {
            self.backend_connections
                .set(id, count, 0)
                .map_err(map_err(BACKEND_CONNECTIONS, "update"))?;
        }
        Ok(())
    }
}
