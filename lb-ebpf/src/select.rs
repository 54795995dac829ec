//! Backend selection, shared by every hook so a flow lands on the same
//! backend whichever hook saw it: frontend lookup, then Maglev slot ->
//! backend id -> backend. New flows of the packet path pick their slot by
//! the Service's algorithm (`select_algorithm`).

use lb_common::{
    Backend4, Endpoint4, FE_FLAG_EMPTY_DROP, Flow4, Frontend4Key, FrontendValue, MAGLEV_TABLE_SIZE,
    flow_hash::maglev_slot, reason::Reason,
};

use crate::{
    maps::{BACKENDS4, FRONTENDS4, HASH_SEED, MAGLEV},
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
    let slot = maglev_slot(hash);
    let id = table_entry(fe, slot).ok_or(Reason::DropBackendMissing)?;
    backend_at(slot, id)
}

/// The backend of a new flow of the packet path, by the frontend's
/// algorithm (`select_algorithm`); `hash` is the flow's seeded hash.
#[inline(always)]
pub fn new_flow_backend(fe: &FrontendValue, hash: u32) -> Result<(u32, Backend4), Reason> {
    let (slot, id) =
        select_algorithm::pick(fe, hash, MAGLEV_TABLE_SIZE, |slot| table_entry(fe, slot))
            .ok_or(Reason::DropBackendMissing)?;
    backend_at(slot, id)
}

/// The backend id in slot `slot` of the frontend's table.
#[inline(always)]
fn table_entry(fe: &FrontendValue, slot: u32) -> Option<u32> {
    if fe.table_id > u32::MAX / MAGLEV_TABLE_SIZE - 1 || slot >= MAGLEV_TABLE_SIZE {
        return None;
    }
    MAGLEV.get(fe.table_id * MAGLEV_TABLE_SIZE + slot).copied()
}

#[inline(always)]
fn backend_at(slot: u32, id: u32) -> Result<(u32, Backend4), Reason> {
    trace::maglev(slot, id);
    // SAFETY: copied out at once (see `frontend`).
    let backend = unsafe { BACKENDS4.get(&id).copied() }.ok_or(Reason::DropBackendMissing)?;
    Ok((id, backend))
}
