//! Upgrading the Maglev tables' layout: an agent of this version started
//! on the pins of the version before per-Service sizes finds `lb_maglev_v1`
//! (one flat array of 1,021-slot tables, `table_id * 1021 + slot`) beside
//! the `lb_maglev_v2` it just created, empty. Before the new programs
//! replace the old ones on their links, every table a frontend references
//! is written into `_v2` under the same id with the same slots, so new
//! flows keep their selection across the swap (established flows live in
//! the connection table and never look at a table); the first sync then
//! rewrites the tables whose size per backend count differs, in new ids,
//! and flips their frontends, as for any change. The old pin is removed:
//! the old programs keep their reference until their links are swapped.

use std::{collections::BTreeSet, path::Path};

use aya::maps::MapData;
use lb_common::{MAGLEV_TABLE_SIZE, MAGLEV_V1};

use super::KernelMaps;
use crate::datapath::{DatapathMaps as _, MapsError};

impl KernelMaps {
    /// Carries the live tables of `lb_maglev_v1` in `pin_dir` over and
    /// removes its pin: how many tables, `None` when there was none.
    pub fn carry_over_maglev_v1(&mut self, pin_dir: &Path) -> Result<Option<usize>, MapsError> {
        let path = pin_dir.join(MAGLEV_V1);
        if !path.exists() {
            return Ok(None);
        }
        let invalid = |what: &str, err: &dyn std::fmt::Display| {
            MapsError::Invalid(format!(
                "{what} {}: {err}; remove it with `rm {}` (new flows are dropped until the first sync) and start again",
                path.display(),
                path.display()
            ))
        };
        let old = MapData::from_pin(&path).map_err(|err| invalid("opening", &err))?;
        let live: BTreeSet<u32> = self
            .frontends()?
            .into_iter()
            .filter(|(_, fe)| fe.backend_count > 0)
            .map(|(_, fe)| fe.table_id)
            .collect();
        for &table_id in &live {
            let first = table_id
                .checked_mul(MAGLEV_TABLE_SIZE)
                .ok_or_else(|| invalid("reading", &format!("table id {table_id}")))?;
            let slots = super::batch::read_u32s(&old, first, MAGLEV_TABLE_SIZE)
                .map_err(|err| invalid("reading", &err))?
                .ok_or_else(|| invalid("reading", &"no batch lookup on this kernel"))?;
            self.write_maglev_table(table_id, &slots)?;
        }
        std::fs::remove_file(&path).map_err(|err| invalid("unpinning", &err))?;
        Ok(Some(live.len()))
    }
}
