//! Rewriting a Maglev table in place when its size stays (2 <-> 3
//! backends both take 1,021 slots): only the slots that change, stored
//! one `u32` at a time into the inner map's mapped memory, with no update
//! of the outer map. Every update of an array of maps waits for an RCU
//! grace period (the kernel's `maybe_wait_bpf_programs`, 8 to 19 ms
//! here), and a swap is only needed when the size changes.
//!
//! What a packet can see mid-rewrite: its slot holds the old backend id
//! or the new one (an aligned 4-byte store is atomic), and the size slot
//! never changes, so every choice is a backend of the old set or of the
//! new one, both of them this Service port's and in the backends map
//! (new ones are written before the tables, removed ones deleted after).
//! A program that read an old id just before the rewrite may still run
//! once it returns, so the backends the old slots named stay until it has
//! written what it chose ([`KernelMaps::wait_for_table_readers`], which
//! `plan::apply` calls before its purges and removals): every CPU seen
//! once with no program inside its selection window (`readers`, a few
//! microseconds), else, past that wait's bound, an update of the outer
//! map with the same inner map at its own id, a no-op for packets that
//! waits for a grace period as every outer update does.
//!
//! Only a table this writer swapped in and pinned itself is rewritten:
//! then its pin is the map the outer map holds (after a restart, or a
//! pin that failed, the first change swaps).

use std::collections::HashSet;

use aya::maps::{Array, MapData};
use lb_common::MAGLEV;

use super::{KernelMaps, map_err, mapped};
use crate::datapath::MapsError;

/// What the in-place path knows: the tables it may rewrite, and the last
/// one rewritten since the outer map was last updated.
#[derive(Default)]
pub(super) struct InPlace {
    /// Table ids whose pin is the inner map this writer swapped in.
    swapped: HashSet<u32>,
    /// A table rewritten in place with no wait for readers since (nor an
    /// outer update): a program may still hold a slot it read before.
    unsettled: Option<(u32, Array<MapData, u32>)>,
    /// Updates of the outer map (each one an RCU wait), for tests and the
    /// bench.
    outer_updates: u64,
}

/// The slots of a table to store, as `(index in the map, backend id)`
/// (the map's index 0 holds the size): none when `current` (the map's
/// values, size first) has another size than `slots`, which then takes
/// a new inner map.
pub(super) fn slot_changes(current: &[u32], slots: &[u32]) -> Option<Vec<(usize, u32)>> {
    let size = usize::try_from(*current.first()?).ok()?;
    if size != slots.len() || current.len() != size + 1 {
        return None;
    }
    let changed = current[1..].iter().zip(slots).enumerate();
    Some(
        changed
            .filter(|(_, (old, new))| old != new)
            .map(|(slot, (_, new))| (slot + 1, *new))
            .collect(),
    )
}

impl KernelMaps {
    /// Rewrites table `table_id` in place when its pin is the map this
    /// writer swapped in and has `slots.len()` slots; false: it must be
    /// swapped (nothing was written).
    pub(super) fn rewrite_table_in_place(
        &mut self,
        table_id: u32,
        slots: &[u32],
    ) -> Result<bool, MapsError> {
        if !self.in_place.swapped.contains(&table_id) {
            return Ok(false);
        }
        let pin = super::maglev::table_pin(self.tables()?, table_id);
        let Ok(data) = MapData::from_pin(&pin) else {
            return Ok(false);
        };
        let Ok(table) = Array::<MapData, u32>::try_from(aya::maps::Map::Array(data)) else {
            return Ok(false);
        };
        let entries = table.len() as usize;
        let data = aya::maps::IterableMap::<u32, u32>::map(&table);
        let rewritten = mapped::rewrite_u32s(data, entries, |current| slot_changes(current, slots))
            .map_err(|err| {
                MapsError::Invalid(format!(
                    "map {MAGLEV}: rewriting table {table_id} in place: {err}"
                ))
            })?;
        if !rewritten {
            return Ok(false);
        }
        // pkt: established flows recheck their backend (the frontend value
        // may stay the same while the backends changed).
        self.ct_generation.bump();
        self.in_place.unsettled = Some((table_id, table));
        Ok(true)
    }

    /// Waits until no program still runs on a slot read before an
    /// in-place rewrite, only when one is pending: the per-CPU counts of
    /// the programs selecting, or one outer update (an RCU grace period)
    /// when they cannot tell.
    pub(super) fn settle_tables(&mut self) -> Result<(), MapsError> {
        let Some((table_id, table)) = self.in_place.unsettled.take() else {
            return Ok(());
        };
        if self.readers.wait_until_empty() {
            return Ok(());
        }
        if let Err(err) = self.maglev.set(table_id, &table, 0) {
            self.in_place.unsettled = Some((table_id, table));
            return Err(map_err(MAGLEV, "wait for the readers of a table")(err));
        }
        self.outer_updated();
        self.readers.waited_a_grace_period();
        Ok(())
    }

    /// An update of the outer map returned: it waited for every program
    /// running, so none holds a slot from before it (a table swapped in
    /// settles every rewrite before it), and every program running since
    /// counts itself (`readers`).
    pub(super) fn outer_updated(&mut self) {
        self.in_place.outer_updates += 1;
        self.in_place.unsettled = None;
        self.readers.grace_period_passed();
    }

    /// Whether table `table_id`'s pin is the inner map this writer swapped
    /// in (only such a table is rewritten in place).
    pub(super) fn may_rewrite_in_place(&self, table_id: u32) -> bool {
        self.in_place.swapped.contains(&table_id)
    }

    /// Table `table_id`'s pin is now the inner map this writer swapped in.
    pub(super) fn table_swapped(&mut self, table_id: u32) {
        self.in_place.swapped.insert(table_id);
    }

    /// Table `table_id` left the outer map (or its pin may no longer be
    /// the map in it).
    pub(super) fn table_gone(&mut self, table_id: u32) {
        self.in_place.swapped.remove(&table_id);
    }

    /// Updates of the outer Maglev map this writer made (each waits for an
    /// RCU grace period): tests prove a size-keeping change makes none,
    /// nor its wait for readers while the per-CPU counts end it.
    pub fn maglev_outer_updates(&self) -> u64 {
        self.in_place.outer_updates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change that keeps the size (the bench's 2 <-> 3 endpoints, both
    /// 1,021 slots) stores only the slots that differ and needs no new
    /// inner map, so no outer-map update; a change of size does.
    #[test]
    fn a_size_keeping_change_stores_only_changed_slots_and_needs_no_swap() {
        let mut current = vec![5, 1, 2, 1, 2, 1];
        assert_eq!(
            slot_changes(&current, &[1, 2, 3, 2, 2]),
            Some(vec![(3, 3), (5, 2)])
        );
        assert_eq!(slot_changes(&current, &[1, 2, 1, 2, 1]), Some(vec![]));
        // Another size: a new inner map.
        assert_eq!(slot_changes(&current, &[1, 2, 3]), None);
        // A map whose size slot disagrees with its length is never
        // rewritten (a table of another layout).
        current[0] = 4;
        assert_eq!(slot_changes(&current, &[1, 2, 3, 2]), None);
        assert_eq!(slot_changes(&[], &[1]), None);
    }

    /// Through the real table builder: 2 -> 3 endpoints keeps 1,021
    /// slots and changes about a third of them, never the size.
    #[test]
    fn two_to_three_endpoints_rewrites_a_third_of_the_slots_in_place() {
        use crate::model::{Backend, Protocol};
        let backend = |i: u8| Backend {
            addr: std::net::Ipv4Addr::new(10, 0, 0, i).into(),
            port: 8080,
            protocol: Protocol::Tcp,
        };
        let two = [backend(1), backend(2)];
        let three = [backend(1), backend(2), backend(3)];
        let size = lb_common::maglev::table_size(2);
        assert_eq!(size, lb_common::maglev::table_size(3));
        let mut current = vec![size];
        current.extend(crate::plan::maglev::table(&two, size));
        let new = crate::plan::maglev::table(&three, size);
        let changes = slot_changes(&current, &new).expect("same size");
        // The new backend's third, and Maglev's few percent of others.
        let third = size as usize / 3;
        let extra = size as usize / 10;
        assert!(
            (third..third + extra).contains(&changes.len()),
            "{}",
            changes.len()
        );
        for (i, id) in changes {
            current[i] = id;
        }
        assert_eq!(current[0], size);
        assert_eq!(&current[1..], new.as_slice());
    }
}
