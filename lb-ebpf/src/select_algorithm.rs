//! The balancing algorithm of a new flow on the packet path
//! (`lb_common::algorithm`): which slot of the frontend's Maglev table
//! names its backend, and the per-backend count of live connections that
//! least-connections compares.
//!
//! The socket hooks do not come here: a socket is one flow, and the hash of
//! its cookie already draws its slot uniformly (per socket, so every
//! datagram of an unconnected UDP socket keeps its backend); they create
//! no connection-table entry, so least-connections counts packet-path
//! flows only.

use aya_ebpf::{helpers::bpf_get_prandom_u32, macros::map, maps::Array};
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use lb_common::{
    DEFAULT_MAX_BACKENDS, FrontendValue,
    algorithm::{
        ALGORITHM_LEAST_CONNECTIONS, ALGORITHM_RANDOM, random_slot, second_is_less_loaded,
    },
};

use crate::trace;

/// Backend id -> live connections (see `lb_common::algorithm`); ids run
/// from 1 to `--max-backends`, so one entry more (sized at load).
#[map(name = "lb_be_conns_v1")]
pub static BACKEND_CONNECTIONS: Array<u64> = Array::pinned(DEFAULT_MAX_BACKENDS + 1, 0);

const _: () = assert!(crate::maps::str_eq(
    "lb_be_conns_v1",
    lb_common::algorithm::BACKEND_CONNECTIONS
));

/// The (slot, backend id) a new flow of `fe` takes in its table of `size`
/// slots, read through `at`; `hash` is the flow's seeded hash (Maglev).
#[inline(always)]
pub fn pick(
    fe: &FrontendValue,
    hash: u32,
    size: u32,
    at: impl Fn(u32) -> Option<u32>,
) -> Option<(u32, u32)> {
    match fe.algorithm() {
        ALGORITHM_RANDOM => {
            let slot = random_slot(random(), size);
            Some((slot, at(slot)?))
        }
        ALGORITHM_LEAST_CONNECTIONS => {
            let first = random_slot(random(), size);
            let second = random_slot(random(), size);
            let (first_id, second_id) = (at(first)?, at(second)?);
            if second_is_less_loaded(connections(first_id), connections(second_id)) {
                Some((second, second_id))
            } else {
                Some((first, first_id))
            }
        }
        _ => {
            let slot = crate::select::slot_of(hash, size)?;
            Some((slot, at(slot)?))
        }
    }
}

#[inline(always)]
fn random() -> u32 {
    // SAFETY: a plain helper call.
    unsafe { bpf_get_prandom_u32() }
}

/// The live connections the counters hold for `backend_id`.
#[inline(always)]
fn connections(backend_id: u32) -> u64 {
    BACKEND_CONNECTIONS.get(backend_id).copied().unwrap_or(0)
}

/// A flow to `backend_id` was entered in the connection table.
#[inline(always)]
pub fn opened(backend_id: u32) {
    add(backend_id, 1);
}

/// A flow to `backend_id` was removed from the connection table.
#[inline(always)]
pub fn closed(backend_id: u32) {
    add(backend_id, u64::MAX);
}

/// Adds `delta` (wrapping: `u64::MAX` takes one off) atomically: every CPU
/// counts into the one entry least-connections reads.
#[inline(always)]
fn add(backend_id: u32, delta: u64) {
    if trace::dry_run() {
        return;
    }
    if let Some(count) = BACKEND_CONNECTIONS.get_ptr_mut(backend_id) {
        // SAFETY: a valid, aligned map value pointer for the program's run;
        // every writer goes through atomics. The bpf target's `core` has no
        // `AtomicU64::fetch_add` (no compare-and-swap), but its atomic add
        // (`lock xadd`, BPF_ATOMIC | BPF_ADD) is what the intrinsic lowers to.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(count, delta) };
    }
}
