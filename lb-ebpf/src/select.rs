//! Backend selection, shared by every hook so a flow lands on the same
//! backend whichever hook saw it: frontend lookup, then Maglev slot ->
//! backend id -> backend. New flows of the packet path pick their slot by
//! the Service's algorithm (`select_algorithm`).

use lb_common::{
    Backend4, Endpoint4, FE_FLAG_EMPTY_DROP, Flow4, Frontend4Key, FrontendValue,
    maglev::{TABLE_SIZE_INDEX, valid_size},
    reason::Reason,
};

use crate::{
    maps::{BACKENDS4, FRONTENDS4, HASH_SEED, MAGLEV, MaglevTable as Table},
    select_algorithm, trace,
};

/// The hash that selects a new flow's backend, under the cluster's seed.
#[inline(always)]
pub fn flow_hash(flow: Flow4) -> u32 {
    flow.hash_seeded(HASH_SEED.get(0).copied().unwrap_or(0))
}

/// The frontend at this destination for this scope, if any.
#[inline(always)]
pub fn frontend(dst: Endpoint4, proto: u8, scope: u8) -> Option<FrontendValue> {
    let key = Frontend4Key {
        addr_be: dst.addr_be,
        port_be: dst.port_be,
        proto,
        scope,
    };
    // SAFETY: the value is copied out at once; a concurrent update can at
    // worst give a torn copy of a 16-byte value, which the agent avoids by
    // writing new tables before flipping the frontend.
    let fe = unsafe { FRONTENDS4.get(&key).copied() }?;
    trace::frontend(&fe);
    Some(fe)
}

/// Why a frontend without backends turns traffic away.
#[inline(always)]
pub fn empty_reason(fe: &FrontendValue) -> Reason {
    if fe.flags & FE_FLAG_EMPTY_DROP != 0 {
        Reason::DropNoLocalEndpoint
    } else {
        Reason::RejectNoEndpoints
    }
}

/// The backend the frontend's Maglev table gives for `hash` (the socket
/// hooks: `hash` is the socket's).
#[inline(always)]
pub fn backend(fe: &FrontendValue, hash: u32) -> Result<(u32, Backend4), Reason> {
    let (table, size) = table(fe).ok_or(Reason::DropBackendMissing)?;
    let slot = slot_of(hash, size).ok_or(Reason::DropBackendMissing)?;
    let id = entry(table, slot).ok_or(Reason::DropBackendMissing)?;
    backend_at(slot, id)
}

/// The backend of a new flow of the packet path, by the frontend's
/// algorithm (`select_algorithm`); `hash` is the flow's seeded hash.
#[inline(always)]
pub fn new_flow_backend(fe: &FrontendValue, hash: u32) -> Result<(u32, Backend4), Reason> {
    let (table, size) = table(fe).ok_or(Reason::DropBackendMissing)?;
    let (slot, id) = select_algorithm::pick(fe, hash, size, |slot| entry(table, slot))
        .ok_or(Reason::DropBackendMissing)?;
    backend_at(slot, id)
}

/// The frontend's table (one inner map: the outer update that swapped it
/// in was whole, and the kernel keeps it alive while this program runs)
/// and its size.
#[inline(always)]
fn table(fe: &FrontendValue) -> Option<(&'static Table, u32)> {
    let table = MAGLEV.get(fe.table_id)?;
    let size = *table.get(TABLE_SIZE_INDEX)?;
    valid_size(size).then_some((table, size))
}

/// The backend id in slot `slot` of `table` (its slots follow the size).
#[inline(always)]
fn entry(table: &Table, slot: u32) -> Option<u32> {
    table.get(slot.checked_add(1)?).copied()
}

/// The Maglev slot of `hash` in a table of `size` slots (checked: a
/// division the compiler cannot prove safe would be a panic path, which
/// the verifier refuses).
#[inline(always)]
pub fn slot_of(hash: u32, size: u32) -> Option<u32> {
    hash.checked_rem(size)
}

#[inline(always)]
fn backend_at(slot: u32, id: u32) -> Result<(u32, Backend4), Reason> {
    trace::maglev(slot, id);
    // SAFETY: copied out at once (see `frontend`).
    let backend = unsafe { BACKENDS4.get(&id).copied() }.ok_or(Reason::DropBackendMissing)?;
    Ok((id, backend))
}
