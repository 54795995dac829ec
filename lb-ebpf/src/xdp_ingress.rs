//! North-south ingress: traffic from outside the node to a NodePort,
//! LoadBalancer IP or externalIP. Parse, look up, select, translate, pass
//! to the stack (which forwards to the local backend).
//!
//! In a trace (`DRY_RUN`, see [`crate::trace`]) the same code runs, but
//! writes no connection-table entry, refreshes no last-seen time and counts
//! nothing; it records its decisions instead. The packet is still rewritten:
//! under `BPF_PROG_TEST_RUN` that is a copy, shown to the user.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_ktime_get_ns, bpf_xdp_get_buff_len},
    macros::xdp,
    programs::XdpContext,
};
use lb_common::{
    CT_DIR_ORIGINAL, CT_DIR_REPLY, Ct4Key, Ct4Value, SCOPE_EXTERNAL, flow_hash::flow_hash4,
    reason::Reason,
};

use lb_common::csum;

use crate::{
    debug,
    maps::CT4,
    parse::{self, XdpPacket},
    reject, select, stats, trace,
};

/// `frags`: multi-buffer aware (jumbo frames; on veth, a program without it
/// disables TSO on the peer and caps the MTU). Headers are read from the
/// linear part only.
#[xdp(frags)]
pub fn lb_xdp_ingress(ctx: XdpContext) -> u32 {
    let (action, reason) = match ingress(&ctx) {
        Ok(reason) => (xdp_action::XDP_PASS, reason),
        Err(Verdict::Pass(reason)) => (xdp_action::XDP_PASS, reason),
        Err(Verdict::Drop(reason)) => (xdp_action::XDP_DROP, reason),
        Err(Verdict::Reject) => {
            let action = match reject::icmp_port_unreachable(&ctx) {
                Ok(()) => xdp_action::XDP_TX,
                Err(()) => xdp_action::XDP_DROP,
            };
            (action, Reason::RejectNoEndpoints)
        }
    };
    stats::count(reason);
    trace::finish(reason);
    if debug::enabled() {
        aya_log_ebpf::debug!(
            &ctx,
            "lb_xdp_ingress: reason {} action {}",
            reason as u32,
            action
        );
    }
    action
}

enum Verdict {
    Pass(Reason),
    Drop(Reason),
    /// No endpoints at all: answer with ICMP port unreachable.
    Reject,
}

impl From<Reason> for Verdict {
    fn from(reason: Reason) -> Self {
        Verdict::Pass(reason)
    }
}

/// Where a packet's destination is rewritten to.
pub struct Nat {
    pub addr_be: u32,
    pub port_be: u16,
}

#[inline(always)]
fn ingress(ctx: &XdpContext) -> Result<Reason, Verdict> {
    // Parse.
    // SAFETY: a plain helper call on our context.
    let buff_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    let pkt = parse::xdp_ipv4(ctx.data(), ctx.data_end(), buff_len)?;
    // SAFETY: `xdp_ipv4` bounds-checked every pointer it returns.
    let (saddr, daddr, ports) = unsafe { ((*pkt.ip).saddr_be, (*pkt.ip).daddr_be, *pkt.ports) };

    // Look up the frontend.
    let fe = select::frontend(daddr, ports.dst_be, pkt.proto, SCOPE_EXTERNAL)
        .ok_or(Reason::PassNoService)?;
    let dry_run = trace::dry_run();

    // A known flow keeps its backend.
    let key = Ct4Key {
        src_addr_be: saddr,
        dst_addr_be: daddr,
        src_port_be: ports.src_be,
        dst_port_be: ports.dst_be,
        proto: pkt.proto,
        dir: CT_DIR_ORIGINAL,
        _pad: [0; 2],
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let (nat, reason) = if let Some(entry) = CT4.get_ptr_mut(&key) {
        // SAFETY: a valid map value pointer; fields are plain data.
        unsafe {
            if !dry_run {
                (*entry).last_seen_ns = now;
            }
            trace::connection((*entry).backend_id);
            let nat = Nat {
                addr_be: (*entry).nat_addr_be,
                port_be: (*entry).nat_port_be,
            };
            (nat, Reason::DnatEstablished)
        }
    } else {
        // Select.
        if fe.backend_count == 0 {
            let reason = select::empty_reason(&fe);
            stats::count_service(fe.service_id, reason);
            return Err(match reason {
                Reason::RejectNoEndpoints => Verdict::Reject,
                reason => Verdict::Drop(reason),
            });
        }
        let hash = flow_hash4(saddr, daddr, ports.src_be, ports.dst_be, pkt.proto);
        let (backend_id, backend) = select::backend(&fe, hash).map_err(Verdict::Drop)?;
        let original = Ct4Value {
            nat_addr_be: backend.addr_be,
            nat_port_be: backend.port_be,
            _pad: 0,
            backend_id,
            service_id: fe.service_id,
            created_ns: now,
            last_seen_ns: now,
        };
        let reply_key = Ct4Key {
            src_addr_be: backend.addr_be,
            dst_addr_be: saddr,
            src_port_be: backend.port_be,
            dst_port_be: ports.src_be,
            proto: pkt.proto,
            dir: CT_DIR_REPLY,
            _pad: [0; 2],
        };
        let reply = Ct4Value {
            nat_addr_be: daddr,
            nat_port_be: ports.dst_be,
            ..original
        };
        // The reply entry first: once the original entry exists, later
        // packets of the flow rely on it. An insert can only fail on memory
        // pressure; the flow is still translated (its replies then pass
        // untranslated, which the client's stack resets).
        if !dry_run {
            let _ = CT4.insert(&reply_key, &reply, 0);
            let _ = CT4.insert(&key, &original, 0);
        }
        let nat = Nat {
            addr_be: backend.addr_be,
            port_be: backend.port_be,
        };
        (nat, Reason::DnatNew)
    };

    stats::count_service(fe.service_id, reason);
    trace::backend(nat.addr_be, nat.port_be);

    // Translate.
    rewrite_destination(&pkt, daddr, ports.dst_be, &nat);
    // Forward: the node's stack routes the packet to the local backend.
    Ok(reason)
}

/// Rewrites the destination address and port of a parsed packet, with
/// incremental checksum updates. `daddr` and `dport_be` are its current
/// destination.
#[inline(always)]
pub fn rewrite_destination(pkt: &XdpPacket, daddr: u32, dport_be: u16, nat: &Nat) {
    // SAFETY: bounds-checked pointers from `xdp_ipv4`.
    unsafe {
        let ip = pkt.ip;
        (*ip).check = csum::replace4((*ip).check, daddr, nat.addr_be);
        (*ip).daddr_be = nat.addr_be;
        *pkt.csum = csum::l4_after_rewrite(
            pkt.proto,
            *pkt.csum,
            daddr,
            nat.addr_be,
            dport_be,
            nat.port_be,
        );
        (*pkt.ports).dst_be = nat.port_be;
    }
}
