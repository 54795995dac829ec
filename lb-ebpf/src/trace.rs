//! Dry-run (trace) mode: `lb trace` loads this very object a second time
//! with `DRY_RUN` set to 1 and runs the real programs on a crafted packet
//! with `BPF_PROG_TEST_RUN`. The programs then take exactly the same
//! decisions but change no shared state (no connection-table entry, no
//! last-seen refresh, no counter) and record what they decided in
//! `TRACE[0]`.
//!
//! `DRY_RUN` is a load-time constant in `.rodata`: in normal mode the
//! verifier knows it is 0 and removes every branch below, so the hot path
//! pays nothing for tracing.

use lb_common::{
    Endpoint4, FrontendValue, TRACE_AFFINITY_HIT, TRACE_AFFINITY_SET, TRACE_BACKEND,
    TRACE_CONNECTION, TRACE_FRONTEND, TRACE_MAGLEV, TRACE_SOCKET_HASH, TraceRecord, reason::Reason,
};

use crate::maps::TRACE;

/// 1: trace mode (set by the loader, `EbpfLoader::override_global`).
#[unsafe(no_mangle)]
static DRY_RUN: u8 = 0;

/// Whether this load is a trace: no shared state may change.
#[inline(always)]
pub fn dry_run() -> bool {
    // SAFETY: a plain read of our own static; volatile so the compiler
    // keeps the load the loader's value lands in.
    unsafe { core::ptr::read_volatile(&raw const DRY_RUN) != 0 }
}

/// Records into `TRACE[0]`; a no-op (pruned by the verifier) unless
/// `DRY_RUN`.
#[inline(always)]
fn record(f: impl FnOnce(&mut TraceRecord)) {
    if dry_run()
        && let Some(rec) = TRACE.get_ptr_mut(0)
    {
        // SAFETY: a valid map value pointer; only the one test run writes it.
        f(unsafe { &mut *rec })
    }
}

/// A frontend was found.
#[inline(always)]
pub fn frontend(fe: &FrontendValue) {
    record(|r| {
        r.steps |= TRACE_FRONTEND;
        r.frontend = *fe;
    })
}

/// The connection table decided: an established flow to `backend_id`.
#[inline(always)]
pub fn connection(backend_id: u32) {
    record(|r| {
        r.steps |= TRACE_CONNECTION;
        r.backend_id = backend_id;
    })
}

/// The Maglev table's `slot` chose `backend_id`.
#[inline(always)]
pub fn maglev(slot: u32, backend_id: u32) {
    record(|r| {
        r.steps |= TRACE_MAGLEV;
        r.slot = slot;
        r.backend_id = backend_id;
    })
}

/// A remembered client decided the backend (session affinity).
#[inline(always)]
pub fn affinity_hit(backend_id: u32) {
    record(|r| {
        r.steps |= TRACE_AFFINITY_HIT;
        r.backend_id = backend_id;
    })
}

/// Session affinity is on: the choice is remembered for the client.
#[inline(always)]
pub fn affinity_set() {
    record(|r| r.steps |= TRACE_AFFINITY_SET)
}

/// A decision named by its `TRACE_*` bit alone (the bit is the record).
#[inline(always)]
pub fn step(bit: u32) {
    record(|r| r.steps |= bit)
}

/// Selection hashed the socket cookie.
#[inline(always)]
pub fn socket_hash() {
    record(|r| r.steps |= TRACE_SOCKET_HASH)
}

/// The packet (or socket) goes to this address and port.
#[inline(always)]
pub fn backend(to: Endpoint4) {
    record(|r| {
        r.steps |= TRACE_BACKEND;
        r.nat_addr_be = to.addr_be;
        r.nat_port_be = to.port_be;
    })
}

/// kube-proxy masquerades this new connection to `addr_be`.
#[inline(always)]
pub fn masquerade(addr_be: u32) {
    record(|r| {
        r.steps |= lb_common::snat::TRACE_MASQUERADE;
        r.snat_addr_be = addr_be;
    })
}

/// The datapath masquerades this new connection to `source`.
#[inline(always)]
pub fn snat(source: Endpoint4) {
    record(|r| {
        r.steps |= lb_common::snat::TRACE_SNAT_APPLIED;
        r.snat_addr_be = source.addr_be;
        r.snat_port_be = source.port_be;
    })
}

/// The final verdict.
#[inline(always)]
pub fn finish(reason: Reason) {
    record(|r| r.reason = reason as u32)
}
