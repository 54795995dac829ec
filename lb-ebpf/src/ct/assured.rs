//! The established fast path: an assured flow's packet whose entry passed
//! its recheck at the current generation, this second, is translated from
//! its connection entry alone, without the frontend lookup
//! (`lb_common::ct::generation::may_skip_frontend`: the agent moves the
//! generation on every frontend and backend write, so the frontend the
//! entry was checked against is still there, for the same Service port).
//! Everything else (a new second, a write since, a packet that may open a
//! flow, a masqueraded flow, whose port is at stake on every packet, a
//! trace, which records the frontend) takes the full path:
//! `lookup_original` after the frontend lookup.

use lb_common::{
    Ct4Key, Flow4, PROTO_UDP,
    ct::{Direction, generation::may_skip_frontend, opens_flow, reopens},
};

use super::{Entry, NO_PEER, entry_of, generation, lifecycle, table};
use crate::{maps::CT4, trace};

/// The assured flow `flow` (client -> frontend) belongs to, when its packet
/// (`tcp_flags`) may skip the frontend lookup; `None`: take the full path.
#[inline(always)]
pub fn lookup_unchanged(flow: Flow4, tcp_flags: u8) -> Option<Entry> {
    // Every UDP datagram and every SYN may open a flow, so they always
    // recheck: not worth a lookup here (traffic to no Service pays none).
    if trace::dry_run() || flow.proto == PROTO_UDP || opens_flow(flow.proto, tcp_flags) {
        return None;
    }
    let key = Ct4Key::original(flow);
    let entry = CT4.get_ptr_mut(&key)?;
    // SAFETY: a valid map value pointer; copied out at once.
    let value = unsafe { *entry };
    let now = table::now_s();
    if value.is_snat()
        || reopens(flow.proto, value.state, tcp_flags)
        || !may_skip_frontend(
            value.checked_gen,
            generation::current(),
            (value.last_seen_s, now),
            flow.proto,
            tcp_flags,
        )
    {
        return None;
    }
    let reply = Ct4Key::reply(value.reply_flow(flow));
    // Not masqueraded: the partner can never be another flow's (`seen`
    // says false only for a masqueraded flow's lost port).
    let _ = lifecycle::seen(
        (table::Table::Assured, now),
        &key,
        entry,
        &reply,
        (flow.dst, NO_PEER),
        Direction::Original,
        tcp_flags,
    );
    Some(entry_of(&value))
}
