//! The connection table's recheck generation (`lb_common::ct::generation`):
//! bumped after every write to the backends and frontends maps, so the
//! datapath's next packet of each established flow rechecks its backend
//! and its frontend. The map is
//! mapped once (`BPF_F_MMAPABLE`): a bump is an atomic add in memory the
//! programs read, not a syscall per backend written.

use std::{
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::maps::MapData;
use lb_common::ct::generation::CT_GENERATION;

use crate::datapath::MapsError;

/// A shared mapping of the generation map's page.
pub(super) struct Generation {
    slot: NonNull<AtomicU32>,
    len: usize,
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
        Ok(Generation { slot, len })
    }

    /// The generation now.
    pub(super) fn get(&self) -> u32 {
        // SAFETY: the slot lies in the live mapping, aligned (offset 0).
        unsafe { self.slot.as_ref() }.load(Ordering::Acquire)
    }

    /// Moves the generation on, after a write the datapath must recheck.
    pub(super) fn bump(&self) {
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
