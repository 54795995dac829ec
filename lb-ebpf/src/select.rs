//! Backend selection, shared by every hook so a flow lands on the same
//! backend whichever hook saw it: frontend lookup, then Maglev slot ->
//! backend id -> backend.

use lb_common::{
    Backend4, Endpoint4, FE_FLAG_EMPTY_DROP, Flow4, Frontend4Key, FrontendValue, MAGLEV_TABLE_SIZE,
    flow_hash::maglev_slot, reason::Reason,
};

use crate::{
    maps::{BACKENDS4, FRONTENDS4, HASH_SEED, MAGLEV},
    trace,
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

/// The backend the frontend's Maglev table gives for `hash`.
#[inline(always)]
pub fn backend(fe: &FrontendValue, hash: u32) -> Result<(u32, Backend4), Reason> {
    if fe.table_id > u32::MAX / MAGLEV_TABLE_SIZE - 1 {
        return Err(Reason::DropBackendMissing);
    }
    let slot = maglev_slot(hash);
    let index = fe.table_id * MAGLEV_TABLE_SIZE + slot;
    let id = *MAGLEV.get(index).ok_or(Reason::DropBackendMissing)?;
    trace::maglev(slot, id);
    // SAFETY: copied out at once (see `frontend`).
    let backend = unsafe { BACKENDS4.get(&id).copied() }.ok_or(Reason::DropBackendMissing)?;
    Ok((id, backend))
}
