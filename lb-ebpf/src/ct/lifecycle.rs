//! What a hit does to its flow: the state moves with the packet's
//! direction and TCP flags (`lb_common::ct::next_state`), the last-seen
//! second is written only when it changed (an established flow's packets
//! then write nothing shared, except once a second), the partner entry is
//! kept consistent (`pair`), and a flow that just became assured moves to
//! the table of assured flows, out of reach of floods.
//!
//! The partner check is a hash lookup, so it runs once per second per
//! direction (at the first packet of a new coarse second, with the
//! last-seen refresh) and at every state change, not on every packet: a
//! flow whose partner entry went (an eviction, the sweep) is healed by its
//! first packet of the next second. A masqueraded flow's original
//! direction checks on every packet: another flow may have claimed its
//! port, and two clients must never share a translated tuple.

use lb_common::{
    Ct4Key, Ct4Value, Endpoint4,
    ct::{Direction, is_assured, next_state},
    reason::Reason,
};

use super::{
    pair::{self, Partner},
    table::{self, Table},
};
use crate::{stats, trace};

/// A packet going `dir` hit `entry` (at `key` in `table`, at the coarse
/// second `now`); `partner` is the
/// key of the flow's other entry, whose rewrite and second endpoint must be
/// `partner_nat` (see `Ct4Value::peer`). False when another flow holds the
/// partner's key (a masqueraded flow has then lost its port).
#[inline(always)]
pub fn seen(
    (table, now): (Table, u32),
    key: &Ct4Key,
    entry: *mut Ct4Value,
    partner: &Ct4Key,
    partner_nat: (Endpoint4, Endpoint4),
    dir: Direction,
    tcp_flags: u8,
) -> bool {
    if trace::dry_run() {
        return true;
    }
    // SAFETY: a valid map value pointer; plain data.
    let mut value = unsafe { *entry };
    let state = next_state(key.proto, value.state, dir, tcp_flags, value.created_s, now);
    let port_at_stake = dir == Direction::Original && value.is_snat();
    if value.last_seen_s == now && value.state == state && !port_at_stake {
        // Nothing changed since this second's first packet, which checked
        // the partner.
        return true;
    }
    if value.last_seen_s != now {
        value.last_seen_s = now;
        // SAFETY: as above.
        unsafe { (*entry).last_seen_s = now };
    }
    if value.state != state {
        value.state = state;
        // SAFETY: as above.
        unsafe { (*entry).state = state };
    }
    let partner_value = match pair::ensure(table, partner, partner_nat, &value, dir) {
        Partner::Present(partner_value) => partner_value,
        Partner::HeldByAnother => return false,
        Partner::NotRestored => return true,
    };
    if table == Table::New && is_assured(state) {
        promote(key, &value, partner, &partner_value);
    }
    true
}

/// Moves a flow's two entries to the table of assured flows.
#[inline(always)]
fn promote(key: &Ct4Key, value: &Ct4Value, partner: &Ct4Key, partner_value: &Ct4Value) {
    let assured = table::map(Table::Assured);
    if assured.insert(partner, partner_value, 0).is_err() {
        return;
    }
    if assured.insert(key, value, 0).is_err() {
        let _ = assured.remove(partner);
        return;
    }
    let new = table::map(Table::New);
    let _ = new.remove(key);
    let _ = new.remove(partner);
    stats::count(Reason::CtPromoted);
}
