//! A masqueraded flow's source port. Its reply entry is keyed by what the
//! backend's replies carry, backend -> node address and SNAT port, so the
//! port is claimed by inserting that key where no entry holds it
//! (`BPF_NOEXIST`): a port is taken only toward the one backend address,
//! port and protocol that flow talks to (the kernel's `nf_nat_used_tuple`
//! counts a tuple as used the same way), two clients never share a
//! translated tuple, and the port is free again when the flow's entries go
//! (the sweep, `forget`, a reopened connection).
//!
//! Each try draws a random port in `SNAT_PORT_MIN..=SNAT_PORT_MAX` (as
//! kube-proxy's `masquerade fully-random` does); after `SNAT_PORT_TRIES`
//! taken ports the flow is a counted drop (`drop_snat_port_exhausted`).

use aya_ebpf::helpers::bpf_get_prandom_u32;
use lb_common::{
    Ct4Key, Ct4Value, Endpoint4, Flow4,
    reason::Reason,
    snat::{SNAT_PORT_TRIES, TRACE_SNAT_EXHAUSTED, snat_port_be},
};

use super::table::{self, Table};
use crate::{maps::CT4, trace};

/// Claims a source port on `addr_be` for the flow whose replies would be
/// `reply` (backend -> client) without SNAT, entering `value` (its reply
/// entry) under the claimed key; the source the flow gets. In a trace
/// nothing is entered: the first port found free is the one reported.
#[inline(always)]
pub fn claim_port(reply: Flow4, addr_be: u32, value: &Ct4Value) -> Result<Endpoint4, Reason> {
    let mut tries = 0;
    while tries < SNAT_PORT_TRIES {
        tries += 1;
        // SAFETY: a plain helper call.
        let source = Endpoint4::new(addr_be, snat_port_be(unsafe { bpf_get_prandom_u32() }));
        let key = Ct4Key::reply(reply.with_destination(source));
        if trace::dry_run() {
            if table::find(&key).is_none() {
                trace::snat(source);
                return Ok(source);
            }
            continue;
        }
        // An assured flow may hold the port: the insert below sees only
        // the table of new flows.
        if CT4.get_ptr(&key).is_some() {
            continue;
        }
        match table::insert_absent(Table::New, &key, value) {
            Ok(()) => {}
            Err(true) => continue,
            Err(false) => return Err(Reason::DropCtInsertFailed),
        }
        // A flow promoted between the check and the insert enters the
        // assured table before it leaves this one: seen here, it keeps
        // the port.
        if CT4.get_ptr(&key).is_some() {
            let _ = table::map(Table::New).remove(&key);
            continue;
        }
        return Ok(source);
    }
    trace::step(TRACE_SNAT_EXHAUSTED);
    Err(Reason::DropSnatPortExhausted)
}
