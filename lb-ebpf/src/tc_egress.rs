//! Reply path: tc egress on the external devices. A reply from a backend to
//! a client of a translated flow gets the frontend back as its source.
//! Parse, look up the reply entry, translate (see [`crate::nat`]), pass on.

use aya_ebpf::{bindings::TC_ACT_SHOT, macros::classifier, programs::TcContext};
use lb_common::reason::Reason;

use crate::{ct, icmp_error, nat, parse, stats};

/// `TCX_NEXT` (the same value as `TC_ACT_UNSPEC`): let the next program on
/// the device (a CNI's, say) see the packet too, translated or not; with
/// none after us the kernel passes it. `TC_ACT_OK` would end the chain.
const TCX_NEXT: i32 = -1;

#[classifier]
pub fn lb_tc_egress(ctx: TcContext) -> i32 {
    let (reason, verdict) = match egress(&ctx) {
        Err(Reason::DropRewriteFailed) => (Reason::DropRewriteFailed, TC_ACT_SHOT),
        Ok(reason) | Err(reason) => (reason, TCX_NEXT),
    };
    stats::count(reason);
    if crate::debug::enabled() {
        aya_log_ebpf::debug!(
            &ctx,
            "lb_tc_egress: reason {} verdict {}",
            reason as u32,
            verdict
        );
    }
    verdict
}

#[inline(always)]
fn egress(ctx: &TcContext) -> Result<Reason, Reason> {
    // Parse.
    let pkt = match parse::skb_ipv4(ctx) {
        // Perhaps a backend's ICMP error about a translated flow.
        Err(Reason::PassOtherProtocol) => return icmp_error::at_tc_egress(ctx),
        parsed => parsed?,
    };
    // Look up the reply entry: backend -> client.
    let entry = ct::lookup_reply(pkt.flow, pkt.tcp_flags, false).ok_or(Reason::PassNoConnection)?;
    // Translate the source back to the frontend.
    nat::rewrite_skb_source(ctx, &pkt, entry.nat)?;
    Ok(Reason::ReverseNat)
}
