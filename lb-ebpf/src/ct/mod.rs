//! The packet hooks' connection table, both directions: a new flow gets an
//! original entry (client -> frontend, naming the backend) and a reply entry
//! (backend -> client, naming the frontend). Keys come from `lb_common::flow`,
//! the one place they are built; states, timeouts and transitions from
//! `lb_common::ct`, shared with the agent's sweep.
//!
//! - `table`: the two tables (assured flows, new flows);
//! - `clock`: their coarse second, cached per CPU for the jiffy;
//! - `lifecycle`: a hit moves its flow's state, refreshes its last-seen
//!   second when it changed, and promotes a flow that became assured;
//! - `pair`: the two directions stay consistent (a missing partner is
//!   restored, a partner of another flow is never overwritten);
//! - `recheck`: a hit is used only while its backend and Service still are
//!   what it names;
//! - `snat`: a masqueraded flow's source port, claimed with its reply key;
//! - `generation`: while the agent wrote no backend or frontend, an
//!   established flow's packets skip the recheck (`lb_common::ct::generation`);
//! - `assured`: and an assured flow's skip the frontend lookup too.
//!
//! In a trace (`DRY_RUN`, see [`crate::trace`]) nothing is written: no
//! entry is created, moved or refreshed.

mod assured;
mod clock;
mod generation;
mod lifecycle;
mod pair;
mod recheck;
mod snat;
mod table;

use lb_common::{
    CT_FLAG_SNAT, Ct4Key, Ct4Value, Endpoint4, Flow4, FrontendValue,
    ct::{Direction, generation::may_skip_recheck, initial_state, opens_flow, reopens},
    reason::Reason,
};

use crate::{stats, trace};

pub use assured::lookup_unchanged;

/// What a connection-table entry says about its flow.
pub struct Entry {
    /// The backend (original entry) or the frontend (reply entry) to
    /// rewrite to.
    pub nat: Endpoint4,
    pub backend_id: u32,
    pub service_id: u32,
    /// Masqueraded: `peer` is the source to rewrite to (original entry)
    /// or the client to rewrite the destination back to (reply entry).
    pub snat: bool,
    pub peer: Endpoint4,
}

/// No second endpoint (a flow that is not masqueraded).
const NO_PEER: Endpoint4 = Endpoint4::new(0, 0);

/// What the original direction's lookup found.
pub enum Original {
    /// A known flow.
    Hit(Entry),
    /// No flow (or a stale one, forgotten), and this packet may open one.
    New,
    /// A flow whose backend is gone or whose frontend belongs to another
    /// Service now, and this packet may not choose again (not a SYN): the
    /// drop reason (`recheck`).
    Stale(Reason),
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
            let now = table::now_s();
            let generation = generation::current();
            let unchanged = may_skip_recheck(
                value.checked_gen,
                generation,
                (value.service_id, fe.service_id),
                (value.last_seen_s, now),
                flow.proto,
                tcp_flags,
            );
            let valid = if unchanged {
                Ok(())
            } else {
                recheck::still_valid(&hit, fe)
            };
            if valid.is_ok() {
                generation::passed(entry, &value, generation);
                let reply = Ct4Key::reply(value.reply_flow(flow));
                let client = if value.is_snat() { flow.src } else { NO_PEER };
                let kept = lifecycle::seen(
                    (table, now),
                    &key,
                    entry,
                    &reply,
                    (flow.dst, client),
                    Direction::Original,
                    tcp_flags,
                );
                if kept || !value.is_snat() {
                    return Ok(Original::Hit(hit));
                }
                // A masqueraded flow whose port another flow claimed after
                // an eviction took its reply entry: never share the tuple.
                table::remove(&key);
                stats::count(Reason::SnatPortLost);
                return if opens_flow(flow.proto, tcp_flags) {
                    Ok(Original::New)
                } else {
                    Ok(Original::Stale(Reason::DropCtStale))
                };
            }
            if let Err(reason) = valid
                && !opens_flow(flow.proto, tcp_flags)
            {
                return Ok(Original::Stale(reason));
            }
            stats::count(Reason::CtReselected);
        }
        // A SYN reusing the port of a closed connection, or of a flow
        // whose backend is gone: a new flow.
        crate::select_algorithm::closed(value.backend_id);
        forget(flow, &value);
    }
    if opens_flow(flow.proto, tcp_flags) {
        Ok(Original::New)
    } else {
        Err(Reason::PassCtNotOpening)
    }
}

/// The entry of a flow's replies: `reply` is backend -> client, or
/// backend -> the node's address and SNAT port when `masqueraded` (an
/// entry of the other kind is not this hook's to translate).
#[inline(always)]
pub fn lookup_reply(reply: Flow4, tcp_flags: u8, masqueraded: bool) -> Option<Entry> {
    let key = Ct4Key::reply(reply);
    let (table, entry) = table::find(&key)?;
    // SAFETY: a valid map value pointer; copied out at once.
    let value = unsafe { *entry };
    if value.is_snat() != masqueraded {
        return None;
    }
    let client = value.client_of_reply(&key);
    let original = Ct4Key::original(Flow4::new(client, value.nat(), reply.proto));
    let source = if masqueraded { reply.dst } else { NO_PEER };
    // A reply always belongs to the flow whose entry it hit.
    let _ = lifecycle::seen(
        (table, table::now_s()),
        &key,
        entry,
        &original,
        (reply.src, source),
        Direction::Reply,
        tcp_flags,
    );
    Some(entry_of(&value))
}

/// The entry at `key` (either direction), read only: an ICMP error about
/// the flow moves no state and refreshes nothing.
#[inline(always)]
pub fn peek(key: &Ct4Key) -> Option<Entry> {
    let (_, entry) = table::find(key)?;
    // SAFETY: a valid map value pointer; copied out at once.
    Some(entry_of(unsafe { &*entry }))
}

#[inline(always)]
fn entry_of(value: &Ct4Value) -> Entry {
    Entry {
        nat: value.nat(),
        backend_id: value.backend_id,
        service_id: value.service_id,
        snat: value.is_snat(),
        peer: value.peer(),
    }
}

/// Enters a new flow (`flow` is client -> frontend) translated to
/// `backend`, in both directions, in the table of new flows; masqueraded
/// to `snat_addr_be` when given: then the source it gets (the node's
/// address and the port its reply key claimed).
#[inline(always)]
pub fn create(
    flow: Flow4,
    backend_id: u32,
    backend: Endpoint4,
    service_id: u32,
    snat_addr_be: Option<u32>,
) -> Result<Option<Endpoint4>, Reason> {
    let now = if trace::dry_run() { 0 } else { table::now_s() };
    let original = Ct4Value {
        nat_addr_be: backend.addr_be,
        nat_port_be: backend.port_be,
        state: initial_state(flow.proto),
        flags: 0,
        backend_id,
        service_id,
        created_s: now,
        last_seen_s: now,
        peer_addr_be: 0,
        peer_port_be: 0,
        checked_gen: 0,
    };
    let reply = Ct4Value {
        nat_addr_be: flow.dst.addr_be,
        nat_port_be: flow.dst.port_be,
        ..original
    };
    let Some(snat_addr_be) = snat_addr_be else {
        if trace::dry_run() {
            return Ok(None);
        }
        // The reply entry first: once the original entry exists, later
        // packets of the flow rely on it.
        pair::claim_reply(flow.reply_via(backend), &reply)?;
        table::insert_new(&Ct4Key::original(flow), &original)?;
        crate::select_algorithm::opened(backend_id);
        return Ok(None);
    };
    let reply = Ct4Value {
        flags: CT_FLAG_SNAT,
        peer_addr_be: flow.src.addr_be,
        peer_port_be: flow.src.port_be,
        ..reply
    };
    let reply_flow = flow.reply_via(backend);
    let source = snat::claim_port(reply_flow, snat_addr_be, &reply)?;
    if trace::dry_run() {
        return Ok(Some(source));
    }
    let original = Ct4Value {
        flags: CT_FLAG_SNAT,
        peer_addr_be: source.addr_be,
        peer_port_be: source.port_be,
        ..original
    };
    if let Err(reason) = table::insert_new(&Ct4Key::original(flow), &original) {
        table::remove(&Ct4Key::reply(reply_flow.with_destination(source)));
        return Err(reason);
    }
    crate::select_algorithm::opened(backend_id);
    Ok(Some(source))
}

/// Removes both entries of a flow (`flow` is client -> frontend, `value`
/// its original entry): a closed connection reopened, a stale flow
/// choosing again.
#[inline(always)]
pub fn forget(flow: Flow4, value: &Ct4Value) {
    if trace::dry_run() {
        return;
    }
    table::remove(&Ct4Key::original(flow));
    table::remove(&Ct4Key::reply(value.reply_flow(flow)));
}
