//! The connection table's recheck generation (`lb_common::ct::generation`):
//! bumped after every write to the backends and frontends maps, so the
//! datapath's next packet of each established flow rechecks its backend
//! and its frontend. The map is
//! mapped once (`BPF_F_MMAPABLE`): a bump is an atomic add in memory the
//! programs read, not a syscall per backend written.
//!
//! An entry remembers 16 bits of the generation and may skip its recheck
//! only within the second its last recheck passed in, so the bumps of any
//! one second are kept under 2^16 ([`BumpBudget`]): the remembered bits
//! can never come round to a false match.

use std::{
    ptr::NonNull,
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::Duration,
};

use aya::maps::MapData;
use lb_common::ct::generation::CT_GENERATION;

use crate::datapath::MapsError;

/// A shared mapping of the generation map's page.
pub(super) struct Generation {
    slot: NonNull<AtomicU32>,
    len: usize,
    budget: Mutex<BumpBudget>,
}

/// Bumps allowed in one second of the datapath's clock: under half of the
/// 2^16 an entry's `checked_gen` can tell apart. A CPU's cached second
/// (`lb-ebpf`'s `ct/clock.rs`) may last up to one tick into the next
/// second, so one second of the datapath sees at most two budgets, still
/// under 2^16. Only bulk removals (one bump each) reach it; the rest of
/// their second is then waited out, at most one second.
const BUMPS_PER_SECOND: u32 = (1 << 15) - 1;

/// Counts the bumps of the current second of the datapath's clock.
#[derive(Debug, Default)]
struct BumpBudget {
    second: u32,
    spent: u32,
}

impl BumpBudget {
    /// Takes one bump in second `now_s`: false when this second's budget
    /// is spent (wait for the next second, then ask again).
    fn take(&mut self, now_s: u32) -> bool {
        if now_s != self.second {
            *self = BumpBudget {
                second: now_s,
                spent: 0,
            };
        }
        if self.spent >= BUMPS_PER_SECOND {
            return false;
        }
        self.spent += 1;
        true
    }
}

/// The seconds of `CLOCK_MONOTONIC_COARSE`: the clock the datapath's
/// `bpf_ktime_get_coarse_ns` reads, converted as the datapath converts it
/// (`lb_common::ct::seconds`), so both sides agree on each second's bounds.
fn coarse_monotonic_s() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain syscall (vDSO) into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    lb_common::ct::timespec_seconds(ts.tv_sec as u64, ts.tv_nsec as u64)
}

// SAFETY: the mapping is shared memory owned by this value; every access
// to the slot is atomic.
unsafe impl Send for Generation {}
// SAFETY: as above.
unsafe impl Sync for Generation {}

impl Generation {
    /// Maps `map` (an mmapable array of one `u32`).
    pub(super) fn map(map: &MapData) -> Result<Generation, MapsError> {
        // SAFETY: a plain query.
        let len = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let slot = super::mapped::map_values(map, len).map_err(|err| {
            MapsError::Invalid(format!(
                "map {CT_GENERATION}: mapping it failed: {err} (it must be an mmapable array: \
                 remove the pin directory's {CT_GENERATION} left by another build and restart)"
            ))
        })?;
        let slot = slot.cast::<AtomicU32>();
        Ok(Generation {
            slot,
            len,
            budget: Mutex::default(),
        })
    }

    /// The generation now.
    pub(super) fn get(&self) -> u32 {
        // SAFETY: the slot lies in the live mapping, aligned (offset 0).
        unsafe { self.slot.as_ref() }.load(Ordering::Acquire)
    }

    /// Moves the generation on, after a write the datapath must recheck
    /// (waiting for the next second first when this one's budget is spent).
    pub(super) fn bump(&self) {
        let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        while !budget.take(coarse_monotonic_s()) {
            thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: as in `get`.
        unsafe { self.slot.as_ref() }.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.slot.as_ptr().cast(), self.len) };
    }
}

impl super::KernelMaps {
    /// The recheck generation the datapath compares entries with (tests,
    /// `lb conntrack`'s readers).
    pub fn ct_generation(&self) -> u32 {
        self.ct_generation.get()
    }

    /// Makes every established flow recheck its frontend and backend at its next packet.
    pub fn recheck_every_flow(&self) {
        self.ct_generation.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second's bumps stop short of 2^16, so an entry's 16 bits checked
    /// in that second never meet the same bits again in it
    /// (`lb_common::ct::generation::may_skip_recheck`).
    #[test]
    fn a_second_allows_fewer_bumps_than_sixteen_bits_tell_apart() {
        let mut budget = BumpBudget::default();
        let taken = (0..1 << 17).take_while(|_| budget.take(7)).count();
        assert_eq!(taken, BUMPS_PER_SECOND as usize);
        // Two seconds' budgets: a CPU's cached second lasting a tick into
        // the next second sees both.
        assert!(2 * taken < 1 << 16);
        assert!(!budget.take(7), "the spent second stays spent");
        assert!(budget.take(8), "the next second starts afresh");
        assert_eq!(budget.spent, 1);
    }

    #[test]
    fn the_agent_counts_seconds_on_the_datapath_s_clock() {
        let before = coarse_monotonic_s();
        let fine = super::super::ct::monotonic_s();
        // The coarse clock lags the fine one by at most a tick.
        assert!(fine >= before && fine - before <= 1, "{before} vs {fine}");
    }
}
