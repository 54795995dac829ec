//! Replies of this node's pods to masqueraded flows: tcx ingress on the
//! devices the node reaches its pods by (`--pod-device`, a bridge such as
//! `cni0`). A pod chosen for a masqueraded flow answers node_addr:port,
//! so its reply enters the node there, never on an external device; it is
//! translated back here (destination the client, source the frontend) and
//! the stack forwards it to the client (`accept_local` on the device: its
//! source is a node address now). Every other packet passes untouched and
//! uncounted: this device carries all of the pods' own traffic.
//!
//! The kernel's checksum helpers do the rewrite: pods' TCP is
//! CHECKSUM_PARTIAL on a veth, which an incremental update would break.

use aya_ebpf::{bindings::TC_ACT_SHOT, macros::classifier, programs::TcContext};
use lb_common::reason::Reason;

use crate::{ct, icmp_error, nat, parse, snat, stats};

/// See `tc_egress::TCX_NEXT`.
const TCX_NEXT: i32 = -1;

#[classifier]
pub fn lb_tc_pod_ingress(ctx: TcContext) -> i32 {
    match reverse(&ctx) {
        Some(Ok(reason)) => {
            stats::count(reason);
            TCX_NEXT
        }
        Some(Err(reason)) => {
            stats::count(reason);
            TC_ACT_SHOT
        }
        None => TCX_NEXT,
    }
}

/// `None`: not a reply to a masqueraded flow (nor an ICMP error about
/// one's request).
#[inline(always)]
fn reverse(ctx: &TcContext) -> Option<Result<Reason, Reason>> {
    let pkt = match parse::skb_ipv4(ctx) {
        Err(Reason::PassOtherProtocol) => return icmp_error::at_pod_ingress(ctx),
        parsed => parsed.ok()?,
    };
    let flow = pkt.flow;
    if !snat::to_snat_port(flow) {
        return None;
    }
    let entry = ct::lookup_reply(flow, pkt.tcp_flags, true)?;
    Some(
        nat::rewrite_skb_source(ctx, &pkt, entry.nat)
            .and_then(|()| nat::rewrite_skb_destination(ctx, &pkt, entry.peer))
            .map(|()| Reason::ReverseSnat),
    )
}
