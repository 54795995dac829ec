//! The wait for the programs that may still be choosing from slots a
//! rewrite in place replaced (`lb_common::readers`, counted per CPU by
//! the datapath's `readers`): once the slots are stored, every CPU must be
//! seen once with no reader inside. That takes microseconds, where the
//! RCU grace period an update of the outer map waits for (the kernel's
//! `synchronize_rcu` in `maybe_wait_bpf_programs`) took 8 to 19 ms here.
//! Past [`WAIT_BOUND`] (a CPU never seen empty: a reader preempted inside
//! its window, or readers overlapping without a gap) the writer falls
//! back to that grace period (`maglev_in_place`).
//!
//! Only programs of this build count themselves. The writer trusts the
//! counts once an RCU grace period passed after it opened the maps (any
//! update of the outer map): the agent opens its writer's maps after
//! attaching every program, so by then no program of an older build, nor
//! one that started before the attach, still runs.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering, fence},
    },
    time::{Duration, Instant},
};

use aya::maps::{MapData, PerCpuArray};
use lb_common::readers::{READERS, READERS_ENTERED, READERS_LEFT, was_empty};
use tracing::warn;

use super::map_err;
use crate::datapath::MapsError;

/// How long the writer waits for every CPU to be seen empty before it
/// waits for a grace period instead: about one grace period here.
pub(super) const WAIT_BOUND: Duration = Duration::from_millis(20);

/// Readings taken back to back before the wait sleeps between them (each
/// is two lookups, about 2 us): a reader's window is a few microseconds.
const SPINS: u32 = 256;
/// The sleep between readings after that.
const NAP: Duration = Duration::from_micros(50);

/// How the writer's waits for table readers went since it opened the maps
/// (tests, the bench and the metrics read it).
#[derive(Debug, Default)]
pub struct ReaderWaits {
    /// Waits the per-CPU counts ended.
    pub counted: AtomicU64,
    /// Waits that took an RCU grace period: a CPU still busy past the
    /// bound, the counts unreadable, or not trusted yet (never once a
    /// table is rewritten in place: only a table this writer swapped in
    /// is, and that swap was an outer update).
    pub grace_periods: AtomicU64,
}

/// The per-CPU counts, and whether they may be trusted yet.
pub(super) struct Readers {
    map: PerCpuArray<MapData, u64>,
    /// An RCU grace period passed since the maps were opened.
    trusted: bool,
    waits: Arc<ReaderWaits>,
}

impl Readers {
    pub(super) fn new(map: PerCpuArray<MapData, u64>) -> Readers {
        Readers {
            map,
            trusted: false,
            waits: Arc::default(),
        }
    }

    /// An RCU grace period passed: every program running now counts.
    pub(super) fn grace_period_passed(&mut self) {
        self.trusted = true;
    }

    /// A wait took a grace period.
    pub(super) fn waited_a_grace_period(&self) {
        self.waits.grace_periods.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn waits(&self) -> Arc<ReaderWaits> {
        self.waits.clone()
    }

    /// Waits until every CPU was seen with no reader inside, after the
    /// caller's stores; false: it could not tell (counts not trusted yet,
    /// a CPU still busy after [`WAIT_BOUND`], logged with its number, or
    /// the map unreadable), and the caller waits for a grace period.
    pub(super) fn wait_until_empty(&self) -> bool {
        if !self.trusted {
            return false;
        }
        match self.wait(WAIT_BOUND) {
            Ok(busy) if busy.is_empty() => {
                self.waits.counted.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(busy) => {
                warn!(
                    cpus = ?busy,
                    bound_ms = WAIT_BOUND.as_millis() as u64,
                    "a program on these CPUs still chose from a table's old slots \
                     after the bound: waiting for an RCU grace period instead"
                );
                false
            }
            Err(err) => {
                warn!(
                    "reading the table readers' counts failed ({err}): waiting for an RCU grace period instead"
                );
                false
            }
        }
    }

    /// The CPUs not seen empty within `bound` (none: every CPU was).
    fn wait(&self, bound: Duration) -> Result<Vec<usize>, MapsError> {
        // After the slots' stores, before the counts' reads (the
        // datapath's adds are full barriers too): a reader whose add this
        // misses reads the new slots.
        fence(Ordering::SeqCst);
        let deadline = Instant::now() + bound;
        let mut busy: Option<Vec<usize>> = None;
        for reading in 0u32.. {
            let (left, entered) = self.read()?;
            let cpus = busy.get_or_insert_with(|| (0..left.len()).collect());
            still_inside(cpus, &left, &entered);
            if cpus.is_empty() || Instant::now() >= deadline {
                break;
            }
            if reading < SPINS {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(NAP);
            }
        }
        Ok(busy.unwrap_or_default())
    }

    /// Every CPU's `left`, then (read after it) its `entered`.
    fn read(&self) -> Result<(Vec<u64>, Vec<u64>), MapsError> {
        let left = self
            .map
            .get(&READERS_LEFT, 0)
            .map_err(map_err(READERS, "lookup"))?;
        // `left` read before `entered` (see `was_empty`).
        fence(Ordering::SeqCst);
        let entered = self
            .map
            .get(&READERS_ENTERED, 0)
            .map_err(map_err(READERS, "lookup"))?;
        Ok((left.to_vec(), entered.to_vec()))
    }

    fn per_cpu(&self) -> Result<Vec<(u64, u64)>, MapsError> {
        let (left, entered) = self.read()?;
        Ok(entered.into_iter().zip(left).collect())
    }
}

impl super::KernelMaps {
    /// How this writer's waits for table readers went (the bench, the
    /// metrics, tests): shared, so it can be read while the writer works.
    pub fn table_reader_waits(&self) -> Arc<ReaderWaits> {
        self.readers.waits()
    }

    /// Each CPU's `(entered, left)` counts of the selection window now
    /// (tests: after a program ran, they are equal).
    pub fn table_readers_per_cpu(&self) -> Result<Vec<(u64, u64)>, MapsError> {
        self.readers.per_cpu()
    }
}

/// Keeps in `busy` the CPUs that one reading (every CPU's `left`, then its
/// `entered`) did not see empty.
fn still_inside(busy: &mut Vec<usize>, left: &[u64], entered: &[u64]) {
    busy.retain(|&cpu| match (left.get(cpu), entered.get(cpu)) {
        (Some(&left), Some(&entered)) => !was_empty(left, entered),
        _ => false,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CPU seen empty once stays done, whatever enters after; a CPU with
    /// a reader inside stays until a reading sees it empty.
    #[test]
    fn each_cpu_is_done_once_seen_empty() {
        let mut busy = vec![0, 1, 2];
        still_inside(&mut busy, &[5, 3, 9], &[5, 4, 9]);
        assert_eq!(busy, vec![1]);
        // CPU 0 gets a reader (it no longer matters); CPU 1's leaves while
        // a nested one is inside.
        still_inside(&mut busy, &[5, 4, 9], &[6, 5, 9]);
        assert_eq!(busy, vec![1]);
        still_inside(&mut busy, &[5, 5, 9], &[6, 5, 9]);
        assert!(busy.is_empty());
    }
}
