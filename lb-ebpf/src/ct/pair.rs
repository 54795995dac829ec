//! The two directions of a flow stay consistent: a hit on one checks that
//! its partner exists and points back (same backend, the expected
//! rewrite), restores a missing one (an LRU eviction or a sweep took it),
//! and never overwrites an entry of another flow that holds the partner's
//! key. A new flow claims its reply entry only where no other flow holds it.

use lb_common::{
    Ct4Key, Ct4Value, Endpoint4, Flow4,
    ct::{Direction, yields_to_new_flow},
    reason::Reason,
};

use super::table::{self, Table};
use crate::stats;

/// What became of a flow's partner entry after a hit on the other.
pub enum Partner {
    /// Present (or restored), with the hit entry's state.
    Present(Ct4Value),
    /// Another flow holds its key (left alone): an eviction took this
    /// flow's entry and the key was claimed since.
    HeldByAnother,
    /// Missing, and could not be restored.
    NotRestored,
}

/// The flow's partner entry after the hit on `own` (going `dir`), with
/// `own`'s state (see [`Partner`]). `(partner_nat, partner_peer)` is
/// what the partner must hold: its rewrite, and for a masqueraded flow its
/// second endpoint (the SNAT source of the original entry, the client of
/// the reply entry; zero otherwise).
#[inline(always)]
pub fn ensure(
    table: Table,
    partner: &Ct4Key,
    (partner_nat, partner_peer): (Endpoint4, Endpoint4),
    own: &Ct4Value,
    dir: Direction,
) -> Partner {
    if let Some((_, entry)) = table::find_from(table, partner) {
        // SAFETY: a valid map value pointer; plain data.
        let mut value = unsafe { *entry };
        if value.nat() != partner_nat
            || value.peer() != partner_peer
            || value.flags != own.flags
            || value.backend_id != own.backend_id
        {
            return Partner::HeldByAnother;
        }
        if value.state != own.state {
            value.state = own.state;
            // SAFETY: as above.
            unsafe { (*entry).state = own.state };
        }
        return Partner::Present(value);
    }
    let value = Ct4Value {
        nat_addr_be: partner_nat.addr_be,
        nat_port_be: partner_nat.port_be,
        peer_addr_be: partner_peer.addr_be,
        peer_port_be: partner_peer.port_be,
        // A restored original entry is rechecked at its next packet.
        checked_gen: 0,
        ..*own
    };
    if table::insert_absent(table, partner, &value).is_err() {
        return Partner::NotRestored;
    }
    stats::count(match dir {
        Direction::Original => Reason::CtReplyRestored,
        Direction::Reply => Reason::CtOriginalRestored,
    });
    Partner::Present(value)
}

/// Enters a new flow's reply entry (`reply` is backend -> client), unless
/// another live flow holds its key (the same client address and port
/// reaching the same backend through another frontend): that flow keeps
/// it, and the new one is refused. An entry of this same flow (same
/// frontend and backend: its original entry expired or was evicted first)
/// is taken over, and so is a flow that is closed or past its timeout,
/// whose entries both go (a client reusing a closed connection's port
/// toward another frontend of the same backend).
#[inline(always)]
pub fn claim_reply(reply: Flow4, value: &Ct4Value) -> Result<(), Reason> {
    let key = Ct4Key::reply(reply);
    if let Some((held_in, entry)) = table::find(&key) {
        // SAFETY: a valid map value pointer; plain data.
        let held = unsafe { *entry };
        let same_flow = held.nat() == value.nat() && held.backend_id == value.backend_id;
        if !same_flow {
            if !yields_to_new_flow(reply.proto, held.state, held.last_seen_s, table::now_s()) {
                return Err(Reason::DropCtReplyClash);
            }
            // The closed flow's original entry: client -> its frontend.
            table::remove(&Ct4Key::original(Flow4::new(
                held.client_of_reply(&key),
                held.nat(),
                reply.proto,
            )));
            stats::count(Reason::CtReplyTakenOver);
        }
        // Replaced by the fresh entry, in the table of new flows where its
        // original entry goes.
        let _ = table::map(held_in).remove(&key);
    }
    match table::insert_absent(Table::New, &key, value) {
        Ok(()) => Ok(()),
        // Another CPU entered the same key between the lookup and here.
        Err(true) => Err(Reason::DropCtReplyClash),
        Err(false) => Err(Reason::DropCtInsertFailed),
    }
}
