//! The packet hooks' connection table, both directions: a new flow gets an
//! original entry (client -> frontend, naming the backend) and a reply entry
//! (backend -> client, naming the frontend). Keys come from `lb_common::flow`,
//! the one place they are built; states, timeouts and transitions from
//! `lb_common::ct`, shared with the agent's sweep.
//!
//! - `table`: the two tables (assured flows, new flows) and the clock;
//! - `lifecycle`: a hit moves its flow's state, refreshes its last-seen
//!   second when it changed, and promotes a flow that became assured;
//! - `pair`: the two directions stay consistent (a missing partner is
//!   restored, a partner of another flow is never overwritten);
//! - `recheck`: a hit is used only while its backend and Service still are
//!   what it names.
//!
//! In a trace (`DRY_RUN`, see [`crate::trace`]) nothing is written: no
//! entry is created, moved or refreshed.

mod lifecycle;
mod pair;
mod recheck;
mod table;

use lb_common::{
    Ct4Key, Ct4Value, Endpoint4, Flow4, FrontendValue,
    ct::{Direction, initial_state, opens_flow, reopens},
    reason::Reason,
};

use crate::{stats, trace};

/// What a connection-table entry says about its flow.
pub struct Entry {
    /// The backend (original entry) or the frontend (reply entry) to
    /// rewrite to.
    pub nat: Endpoint4,
    pub backend_id: u32,
    pub service_id: u32,
}

/// What the original direction's lookup found.
pub enum Original {
    /// A known flow.
    Hit(Entry),
    /// No flow (or a stale one, forgotten), and this packet may open one.
    New,
    /// A flow whose backend is gone or whose frontend belongs to another
    /// Service now, and this packet may not choose again (not a SYN).
    Stale,
}

/// Looks up a packet of the original direction (`flow` is client ->
/// frontend `fe`) with its TCP flags (0 for UDP). A packet that neither
/// belongs to a flow nor opens one is `Err(PassCtNotOpening)`.
#[inline(always)]
pub fn lookup_original(flow: Flow4, tcp_flags: u8, fe: &FrontendValue) -> Result<Original, Reason> {
    let key = Ct4Key::original(flow);
    if let Some((table, entry)) = table::find(&key) {
        // SAFETY: a valid map value pointer; copied out at once.
        let value = unsafe { *entry };
        if !reopens(flow.proto, value.state, tcp_flags) {
            let hit = entry_of(&value);
            if recheck::still_valid(&hit, fe, flow.proto, tcp_flags) {
                let reply = Ct4Key::reply(flow.reply_via(value.nat()));
                lifecycle::seen(
                    table,
                    &key,
                    entry,
                    &reply,
                    flow.dst,
                    Direction::Original,
                    tcp_flags,
                );
                return Ok(Original::Hit(hit));
            }
            if !opens_flow(flow.proto, tcp_flags) {
                return Ok(Original::Stale);
            }
            stats::count(Reason::CtReselected);
        }
        // A SYN reusing the port of a closed connection, or of a flow
        // whose backend is gone: a new flow.
        crate::select_algorithm::closed(value.backend_id);
        forget(flow, value.nat());
    }
    if opens_flow(flow.proto, tcp_flags) {
        Ok(Original::New)
    } else {
        Err(Reason::PassCtNotOpening)
    }
}

/// The entry of a flow's replies: `reply` is backend -> client.
#[inline(always)]
pub fn lookup_reply(reply: Flow4, tcp_flags: u8) -> Option<Entry> {
    let key = Ct4Key::reply(reply);
    let (table, entry) = table::find(&key)?;
    // SAFETY: a valid map value pointer; copied out at once.
    let value = unsafe { *entry };
    let original = Ct4Key::original(Flow4::new(reply.dst, value.nat(), reply.proto));
    lifecycle::seen(
        table,
        &key,
        entry,
        &original,
        reply.src,
        Direction::Reply,
        tcp_flags,
    );
    Some(entry_of(&value))
}

#[inline(always)]
fn entry_of(value: &Ct4Value) -> Entry {
    Entry {
        nat: value.nat(),
        backend_id: value.backend_id,
        service_id: value.service_id,
    }
}

/// Enters a new flow (`flow` is client -> frontend) translated to
/// `backend`, in both directions, in the table of new flows.
#[inline(always)]
pub fn create(
    flow: Flow4,
    backend_id: u32,
    backend: Endpoint4,
    service_id: u32,
) -> Result<(), Reason> {
    if trace::dry_run() {
        return Ok(());
    }
    let now = table::now_s();
    let original = Ct4Value {
        nat_addr_be: backend.addr_be,
        nat_port_be: backend.port_be,
        state: initial_state(flow.proto),
        _pad: 0,
        backend_id,
        service_id,
        created_s: now,
        last_seen_s: now,
    };
    let reply = Ct4Value {
        nat_addr_be: flow.dst.addr_be,
        nat_port_be: flow.dst.port_be,
        ..original
    };
    // The reply entry first: once the original entry exists, later packets
    // of the flow rely on it.
    pair::claim_reply(flow.reply_via(backend), &reply)?;
    table::insert_new(&Ct4Key::original(flow), &original)?;
    crate::select_algorithm::opened(backend_id);
    Ok(())
}

/// Removes both entries of a flow translated to `backend` (a closed
/// connection reopened, a stale flow choosing again).
#[inline(always)]
pub fn forget(flow: Flow4, backend: Endpoint4) {
    if trace::dry_run() {
        return;
    }
    table::remove(&Ct4Key::original(flow));
    table::remove(&Ct4Key::reply(flow.reply_via(backend)));
}
