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

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use lb_common::{Endpoint4, PROTO_UDP, reason::Reason, snat::SNAT_PORT_MIN};

use crate::{
    ct, nat,
    parse::{self, ETH_HLEN, IPV4_CSUM_OFF, SkbPacket},
    snat, stats,
};

/// See `tc_egress::TCX_NEXT`.
const TCX_NEXT: i32 = -1;
/// The destination address' offset in the IPv4 header.
const IPV4_DADDR_OFF: usize = 16;

#[classifier]
pub fn lb_tc_pod_ingress(ctx: TcContext) -> i32 {
    match reverse(&ctx) {
        Some(Ok(())) => {
            stats::count(Reason::ReverseSnat);
            TCX_NEXT
        }
        Some(Err(reason)) => {
            stats::count(reason);
            TC_ACT_SHOT
        }
        None => TCX_NEXT,
    }
}

/// `None`: not a reply to a masqueraded flow.
#[inline(always)]
fn reverse(ctx: &TcContext) -> Option<Result<(), Reason>> {
    let pkt = parse::skb_ipv4(ctx).ok()?;
    let flow = pkt.flow;
    if u16::from_be(flow.dst.port_be) < SNAT_PORT_MIN || snat::node_address()? != flow.dst.addr_be {
        return None;
    }
    let entry = ct::lookup_reply(flow, pkt.tcp_flags, true)?;
    Some(
        nat::rewrite_skb_source(ctx, &pkt, entry.nat)
            .and_then(|()| rewrite_destination(ctx, &pkt, entry.peer)),
    )
}

/// Rewrites the destination of a parsed skb to `to` (its source may have
/// been rewritten already: only the destination's fields are touched).
#[inline(always)]
fn rewrite_destination(ctx: &TcContext, pkt: &SkbPacket, to: Endpoint4) -> Result<(), Reason> {
    let fail = |_| Reason::DropRewriteFailed;
    let from = pkt.flow.dst;
    let mut l4_flags = 0u64;
    let mut l4_csum = true;
    if pkt.flow.proto == PROTO_UDP {
        l4_flags = BPF_F_MARK_MANGLED_0 as u64;
        let check: u16 = ctx.load(pkt.csum_off).map_err(fail)?;
        l4_csum = check != 0;
    }
    if l4_csum {
        ctx.l4_csum_replace(
            pkt.csum_off,
            from.addr_be as u64,
            to.addr_be as u64,
            l4_flags | BPF_F_PSEUDO_HDR as u64 | 4,
        )
        .map_err(fail)?;
        ctx.l4_csum_replace(
            pkt.csum_off,
            from.port_be as u64,
            to.port_be as u64,
            l4_flags | 2,
        )
        .map_err(fail)?;
    }
    ctx.l3_csum_replace(
        ETH_HLEN + IPV4_CSUM_OFF,
        from.addr_be as u64,
        to.addr_be as u64,
        4,
    )
    .map_err(fail)?;
    ctx.store(ETH_HLEN + IPV4_DADDR_OFF, &to.addr_be, 0)
        .map_err(fail)?;
    ctx.store(pkt.l4_off + 2, &to.port_be, 0).map_err(fail)?;
    Ok(())
}
