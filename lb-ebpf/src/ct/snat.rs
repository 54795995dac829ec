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
//!
//! The tries run in one global BPF function ([`lb_ct_claim_snat_port`]),
//! which the kernel verifies once, on its own: inlined, its loop was
//! walked try by try again on every path of `lb_xdp_ingress` reaching a
//! masqueraded new flow. Run time pays one BPF-to-BPF call per
//! masqueraded new flow.

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
    let packed = lb_ct_claim_snat_port(
        u64::from(reply.src.addr_be) | u64::from(reply.src.port_be) << 32,
        u64::from(reply.dst.addr_be) | u64::from(reply.dst.port_be) << 32,
        reply.proto,
        addr_be,
        value,
    );
    match packed >> 32 {
        // The port, in network order (a claimed port is never 0).
        0 => Ok(Endpoint4::new(addr_be, packed as u16)),
        _ => Err(Reason::from_index(packed as u32).unwrap_or(Reason::DropCtInsertFailed)),
    }
}

/// [`claim`] as a global BPF function (see the module's notes): the reply
/// flow's ends packed as address | port << 32 and its protocol; the port claimed (network order) in the low bits, or 1 <<
/// 32 | the reason.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_ct_claim_snat_port(
    src: u64,
    dst: u64,
    proto: u8,
    addr_be: u32,
    value: *const Ct4Value,
) -> u64 {
    // SAFETY: the caller's stack slot, or null (which the verifier makes
    // every global function check).
    let Some(value) = (unsafe { value.as_ref() }) else {
        return 1 << 32 | Reason::DropCtInsertFailed as u64;
    };
    let reply = Flow4::new(
        Endpoint4::new(src as u32, (src >> 32) as u16),
        Endpoint4::new(dst as u32, (dst >> 32) as u16),
        proto,
    );
    match claim(reply, addr_be, value) {
        Ok(source) => u64::from(source.port_be),
        Err(reason) => 1 << 32 | reason as u64,
    }
}

#[inline(always)]
fn claim(reply: Flow4, addr_be: u32, value: &Ct4Value) -> Result<Endpoint4, Reason> {
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
