//! The session-affinity map: read for `lb affinity list`, purged of the
//! entries of endpoints that leave a Service port, aged by the kernel
//! tests.

use lb_common::{AFFINITY4, Affinity4Key, Affinity4Value};

use super::{KernelMaps, ignore_missing, map_err};
use crate::datapath::MapsError;

impl KernelMaps {
    /// Every affinity entry (in no particular order).
    pub fn affinity_entries(&self) -> Result<Vec<(Affinity4Key, Affinity4Value)>, MapsError> {
        self.affinity
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(AFFINITY4, "iterate"))
    }

    /// Writes one entry as the datapath would (tests age an entry by
    /// moving its time back).
    pub fn set_affinity_entry(
        &mut self,
        key: &Affinity4Key,
        value: &Affinity4Value,
    ) -> Result<(), MapsError> {
        self.affinity
            .insert(key, value, 0)
            .map_err(map_err(AFFINITY4, "update"))
    }

    /// Removes the entries of each (service id, backend id).
    pub(super) fn purge_affinity_of(&mut self, pairs: &[(u32, u32)]) -> Result<usize, MapsError> {
        if pairs.is_empty() {
            return Ok(0);
        }
        // Collect first: deleting while walking a hash map restarts the walk.
        let keys: Vec<Affinity4Key> = self
            .affinity_entries()?
            .into_iter()
            .filter(|(k, v)| pairs.contains(&(k.service_id, v.backend_id)))
            .map(|(k, _)| k)
            .collect();
        let mut removed = 0;
        for key in &keys {
            removed += usize::from(
                ignore_missing(self.affinity.remove(key)).map_err(map_err(AFFINITY4, "delete"))?,
            );
        }
        Ok(removed)
    }
}
