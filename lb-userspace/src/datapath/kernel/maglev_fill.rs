//! Writing a plan's Maglev tables: those that keep their size rewritten
//! in place (`maglev_in_place`), the others built, created and filled as
//! new inner maps on every core, swapped into the outer map together (one
//! RCU wait per batch), then pinned, also on every core. At a full sync
//! of 10,000 Services each new table costs a map creation (the kernel
//! allocates its mappable pages), a mapping to fill it and a pin, and the
//! kernel takes these from several threads at once.

use aya::maps::{Array, MapData};

use super::{KernelMaps, maglev::built_swap_batch};
use crate::datapath::MapsError;

/// Threads filling and pinning tables at the most.
const MAX_WORKERS: usize = 4;

/// Fewer new tables than this are filled by the calling thread alone (a
/// thread costs more than a few tables).
const PARALLEL_MIN: usize = 64;

/// The threads to fill `count` tables with.
fn workers_for(count: usize) -> usize {
    if count < PARALLEL_MIN {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    cores.clamp(1, MAX_WORKERS)
}

/// `f` of every item, in order, on up to `workers` threads (each taking
/// a contiguous share); the first error wins.
fn on_workers<I: Sync, T: Send>(
    items: &[I],
    workers: usize,
    f: &(dyn Fn(&I) -> Result<T, MapsError> + Sync),
) -> Result<Vec<T>, MapsError> {
    if workers <= 1 || items.len() < 2 {
        return items.iter().map(f).collect();
    }
    let share = items.len().div_ceil(workers);
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks(share)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Result<Vec<T>, _>>()))
            .collect();
        let mut all = Vec::with_capacity(items.len());
        for part in parts {
            let done = part.join().map_err(|_| {
                MapsError::Invalid("a thread writing Maglev tables panicked".into())
            })?;
            all.extend(done?);
        }
        Ok(all)
    })
}

impl KernelMaps {
    /// Writes tables `ids` whole, the `i`-th's slots built by `slots(i)`
    /// just before it is written (dropped once it is). Those this writer
    /// swapped in and that keep their size are rewritten in place; the
    /// others fill new inner maps, swapped in together as many at a time
    /// as [`built_swap_batch`] allows, then pinned. An update of an array
    /// of maps from userspace waits for an RCU grace period (the kernel's
    /// `maybe_wait_bpf_programs`), once per call, about 14 ms on this
    /// machine: 10,000 tables one by one took 140 s, 256 per update 40
    /// waits, 8,192 per update 2, now 1. A datapath without a pin
    /// directory is refused before anything is swapped in (tables are
    /// pinned beside the maps).
    pub(super) fn write_maglev_tables_built(
        &mut self,
        ids: &[u32],
        slots: &(dyn Fn(usize) -> Vec<u32> + Sync),
    ) -> Result<(), MapsError> {
        self.make_tables_dir()?;
        let mut fresh = Vec::new();
        for (i, &table_id) in ids.iter().enumerate() {
            // No outer update, so no RCU wait (`maglev_in_place`).
            if self.may_rewrite_in_place(table_id)
                && self.rewrite_table_in_place(table_id, &slots(i))?
            {
                continue;
            }
            fresh.push(i);
        }
        let batch = built_swap_batch();
        for chunk in fresh.chunks(batch) {
            let maps = &*self;
            let filled = on_workers(chunk, workers_for(chunk.len()), &|&i| {
                Ok((ids[i], maps.fill_table(ids[i], &slots(i))?))
            })?;
            self.swap_and_pin(&filled)?;
        }
        Ok(())
    }

    /// Swaps filled tables in, then pins each: from then on its pin is
    /// the map the outer map holds.
    fn swap_and_pin(&mut self, filled: &[(u32, Array<MapData, u32>)]) -> Result<(), MapsError> {
        for (table_id, _) in filled {
            self.table_gone(*table_id);
        }
        self.swap_in(filled)?;
        let maps = &*self;
        on_workers(filled, workers_for(filled.len()), &|(table_id, inner)| {
            maps.pin_table(*table_id, aya::maps::IterableMap::<u32, u32>::map(inner))
        })?;
        for (table_id, _) in filled {
            self.table_swapped(*table_id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items keep their order across the threads, and the first error of
    /// any thread is the result.
    #[test]
    fn work_on_several_threads_keeps_the_order_and_the_errors() {
        let items: Vec<u32> = (0..1000).collect();
        let doubled = on_workers(&items, 4, &|i| Ok(i * 2)).unwrap();
        assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        let failed = on_workers(&items, 3, &|i| {
            if *i == 700 {
                Err(MapsError::Invalid("700".into()))
            } else {
                Ok(*i)
            }
        });
        assert!(matches!(failed, Err(MapsError::Invalid(m)) if m == "700"));
        assert_eq!(workers_for(PARALLEL_MIN - 1), 1);
        assert!((1..=MAX_WORKERS).contains(&workers_for(10_000)));
    }
}
