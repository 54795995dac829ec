//! Reply path: tc egress on the external devices. A reply from a backend to
//! a client of a translated flow gets the frontend back as its source. The
//! kernel's checksum helpers do the rewrite: unlike XDP's incremental
//! update, they handle CHECKSUM_PARTIAL skbs (locally generated TCP).

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_SHOT},
    helpers::bpf_ktime_get_ns,
    macros::classifier,
    programs::TcContext,
};
use lb_common::{CT_DIR_REPLY, Ct4Key, PROTO_UDP, reason::Reason};

use crate::{
    maps::CT4,
    parse::{self, ETH_HLEN, IPV4_CSUM_OFF, IPV4_SADDR_OFF},
    stats,
};

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
    let pkt = parse::skb_ipv4(ctx)?;

    // Look up the reply entry: backend -> client.
    let key = Ct4Key {
        src_addr_be: pkt.saddr_be,
        dst_addr_be: pkt.daddr_be,
        src_port_be: pkt.ports.src_be,
        dst_port_be: pkt.ports.dst_be,
        proto: pkt.proto,
        dir: CT_DIR_REPLY,
        _pad: [0; 2],
    };
    let entry = CT4.get_ptr_mut(&key).ok_or(Reason::PassNoConnection)?;
    // SAFETY: a valid map value pointer; fields are plain data.
    let (fe_addr, fe_port) = unsafe {
        (*entry).last_seen_ns = bpf_ktime_get_ns();
        ((*entry).nat_addr_be, (*entry).nat_port_be)
    };

    // Translate the source back to the frontend.
    let fail = |_| Reason::DropRewriteFailed;
    let mut l4_flags = 0u64;
    let mut l4_csum = true;
    if pkt.proto == PROTO_UDP {
        // Zero means "no checksum"; MARK_MANGLED_0 keeps it so and turns a
        // computed zero into 0xffff.
        l4_flags = BPF_F_MARK_MANGLED_0 as u64;
        let check: u16 = ctx.load(pkt.csum_off).map_err(fail)?;
        l4_csum = check != 0;
    }
    if l4_csum {
        ctx.l4_csum_replace(
            pkt.csum_off,
            pkt.saddr_be as u64,
            fe_addr as u64,
            l4_flags | BPF_F_PSEUDO_HDR as u64 | 4,
        )
        .map_err(fail)?;
        ctx.l4_csum_replace(
            pkt.csum_off,
            pkt.ports.src_be as u64,
            fe_port as u64,
            l4_flags | 2,
        )
        .map_err(fail)?;
    }
    ctx.l3_csum_replace(
        ETH_HLEN + IPV4_CSUM_OFF,
        pkt.saddr_be as u64,
        fe_addr as u64,
        4,
    )
    .map_err(fail)?;
    ctx.store(ETH_HLEN + IPV4_SADDR_OFF, &fe_addr, 0)
        .map_err(fail)?;
    ctx.store(pkt.l4_off, &fe_port, 0).map_err(fail)?;
    Ok(Reason::ReverseNat)
}
