//! Writing a plan's Maglev tables: those that keep their size rewritten
//! in place (`maglev_in_place`), the others built (their slots computed)
//! on every core while one thread creates and fills them as new inner
//! maps, swapped into the outer map together (one RCU wait per batch),
//! then pinned on every core. At a full sync of 10,000 Services each new
//! table costs its slots (the Maglev permutations, 14 us on this VM), a
//! map creation (the kernel allocates its mappable pages, 11 to 13 us), a
//! mapping to fill it and a pin.
//!
//! The creation, the mapping and its removal change the process's address
//! space: each takes its mmap lock, and each unmapping flushes the TLB of
//! every CPU running one of its threads (on a VM, an IPI that exits to
//! the host). Two threads each building and filling tables waited on
//! each other: 10,003 tables took 357 to 438 ms on two threads and 296 to
//! 308 ms on one. So only one thread fills, the others build, and the
//! tables it fills share a window of address space unmapped at once
//! (`mapped::FillWindow`): unmapped one by one, each unmapping
//! interrupted the building thread and a table's mapping, stores and
//! unmapping took 16 to 20 us, 3 us with the unmappings gathered.
//! Building is then the longer half, so the filling thread also builds
//! whenever nothing built is waiting: 10,003 tables in 303 to 320 ms in
//! all, the apply of the full sync 437 to 484 ms -> 384 to 405 ms (seven
//! runs and six, alternating).

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    mpsc,
};

use aya::maps::{Array, MapData};

use lb_common::MAGLEV;

use super::{KernelMaps, maglev::built_swap_batch, mapped::FillWindow};
use crate::datapath::MapsError;

/// Threads building, filling and pinning tables at the most.
const MAX_WORKERS: usize = 4;

/// Fewer new tables than this are built and filled by the calling thread
/// alone (a thread costs more than a few tables).
const PARALLEL_MIN: usize = 64;

/// Built tables waiting for the filling thread at the most: bounds the
/// slots held at once (a 1,021-slot table is 4 KiB).
const BUILT_AHEAD: usize = 256;

/// The threads to work on `count` tables with.
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

/// `consume(item, build(item))` of every item, the results in order,
/// `consume` always on this thread: `build` (pure) on `workers - 1`
/// threads besides, each taking the next item not yet taken, while this
/// thread consumes what they built as it arrives and, when nothing built
/// is waiting, takes and builds the next item itself (filling a table
/// takes less time than building one). One worker: all on this thread.
/// The first error of `consume` wins, and stops the builders at their
/// next item.
fn built_ahead<I: Sync, B: Send, T>(
    items: &[I],
    workers: usize,
    build: &(dyn Fn(&I) -> B + Sync),
    consume: &mut dyn FnMut(&I, B) -> Result<T, MapsError>,
) -> Result<Vec<T>, MapsError> {
    if workers <= 1 || items.len() < 2 {
        return items
            .iter()
            .map(|item| consume(item, build(item)))
            .collect();
    }
    let next = AtomicUsize::new(0);
    let take = || {
        let position = next.fetch_add(1, Ordering::Relaxed);
        (position < items.len()).then_some(position)
    };
    std::thread::scope(|scope| {
        let (sender, built) = mpsc::sync_channel::<(usize, B)>(BUILT_AHEAD);
        let handles: Vec<_> = (1..workers)
            .map(|_| {
                let sender = sender.clone();
                let take = &take;
                scope.spawn(move || {
                    while let Some(position) = take() {
                        // The receiver is gone: the consumer failed, stop.
                        if sender.send((position, build(&items[position]))).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        drop(sender);
        let consumed = consume_in_order(items, built, &take, build, consume);
        // Joined here, the receiver gone: a panic is an error, not the
        // scope's own panic.
        let panicked = handles.into_iter().any(|handle| handle.join().is_err());
        if panicked {
            return Err(MapsError::Invalid(
                "a thread building Maglev tables panicked".into(),
            ));
        }
        consumed
    })
}

/// `built_ahead`'s consuming side: what the builders sent, or else an
/// item taken and built here, consumed and put back in the items' order.
/// Takes the receiver so that returning drops it, which stops the
/// builders.
fn consume_in_order<I, B, T>(
    items: &[I],
    built: mpsc::Receiver<(usize, B)>,
    take: &dyn Fn() -> Option<usize>,
    build: &(dyn Fn(&I) -> B + Sync),
    consume: &mut dyn FnMut(&I, B) -> Result<T, MapsError>,
) -> Result<Vec<T>, MapsError> {
    let build_here = || take().map(|position| (position, build(&items[position])));
    let mut done: Vec<Option<T>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    loop {
        let next = match built.try_recv() {
            Ok(sent) => Some(sent),
            Err(mpsc::TryRecvError::Empty) => build_here().or_else(|| built.recv().ok()),
            Err(mpsc::TryRecvError::Disconnected) => build_here(),
        };
        // Nothing left to take, and every builder done.
        let Some((position, value)) = next else { break };
        done[position] = Some(consume(&items[position], value)?);
    }
    // An item taken but never sent is a builder's panic, which the caller
    // reports.
    done.into_iter()
        .map(|result| {
            result.ok_or_else(|| MapsError::Invalid("a Maglev table was not built".into()))
        })
        .collect()
}

impl KernelMaps {
    /// Writes tables `ids` whole, the `i`-th's slots built by `slots(i)`
    /// just before it is written (dropped once it is). Those this writer
    /// swapped in and that keep their size are rewritten in place; the
    /// others are built on the other cores while this thread fills them
    /// into new inner maps, swapped in together as many at a time
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
            let mut window = FillWindow::reserve().map_err(|err| {
                MapsError::Invalid(format!(
                    "map {MAGLEV}: reserving memory to fill tables: {err}"
                ))
            })?;
            let filled = built_ahead(
                chunk,
                workers_for(chunk.len()),
                &|&i| slots(i),
                &mut |&i, built| Ok((ids[i], maps.fill_table(ids[i], &built, &mut window)?)),
            )?;
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

    /// Built on any thread, consumed on this one: every item built once and
    /// consumed once, the results in the items' order, whatever the
    /// number of workers.
    #[test]
    fn tables_built_ahead_are_consumed_once_each_in_order() {
        let items: Vec<u32> = (0..1000).collect();
        let here = std::thread::current().id();
        for workers in 1..=4 {
            let mut seen = Vec::new();
            let results = built_ahead(&items, workers, &|i| i * 3, &mut |i, built| {
                assert_eq!(std::thread::current().id(), here);
                seen.push(*i);
                Ok(built + 1)
            })
            .unwrap();
            assert_eq!(
                results,
                items.iter().map(|i| i * 3 + 1).collect::<Vec<_>>(),
                "{workers} workers"
            );
            seen.sort_unstable();
            assert_eq!(seen, items, "{workers} workers");
        }
    }

    /// The consumer's first error is the result, and it stops the
    /// builders: far fewer items are built than there are.
    #[test]
    fn a_failed_fill_stops_the_builders() {
        let items: Vec<u32> = (0..100_000).collect();
        let built = std::sync::atomic::AtomicUsize::new(0);
        let failed = built_ahead(
            &items,
            3,
            &|i| {
                built.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                *i
            },
            &mut |_, value| {
                if value == 10 {
                    Err(MapsError::Invalid("table 10".into()))
                } else {
                    Ok(value)
                }
            },
        );
        assert!(matches!(failed, Err(MapsError::Invalid(m)) if m == "table 10"));
        let built = built.load(std::sync::atomic::Ordering::Relaxed);
        assert!(built < items.len() / 2, "{built} of {} built", items.len());
    }

    /// A builder's panic is an error of the write, not the agent's panic.
    /// (This thread builds too: its builds wait until the builder has
    /// taken an item, on which it panics.)
    #[test]
    fn a_builders_panic_is_an_error() {
        use std::sync::atomic::AtomicBool;
        let items: Vec<u32> = (0..1000).collect();
        let here = std::thread::current().id();
        let builder_ran = AtomicBool::new(false);
        let failed = built_ahead(
            &items,
            2,
            &|i| {
                if std::thread::current().id() != here {
                    builder_ran.store(true, Ordering::SeqCst);
                    panic!("the builder fails");
                }
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while !builder_ran.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                    std::thread::yield_now();
                }
                *i
            },
            &mut |_, value| Ok(value),
        );
        assert!(matches!(failed, Err(MapsError::Invalid(m)) if m.contains("panicked")));
    }
}
