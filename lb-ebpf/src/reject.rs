//! Rejecting traffic to a Service without endpoints the way kube-proxy does
//! (`-j REJECT`): an ICMP destination-unreachable / port-unreachable back to
//! the client, for TCP and UDP alike (a TCP client's connect() then fails
//! with ECONNREFUSED at once instead of timing out).
//!
//! Answers are rate-limited per CPU (`lb_common::reject`: the kernel's own
//! 1,000 ICMP errors per second, bursts of 50); what is over the limit is
//! dropped and counted apart (`drop_reject_rate_limited`).
//!
//! The answer itself is built by `lb_common::icmp` (checked on the host);
//! here the frame is turned into it in place and sent back out of the
//! device it came in on (`XDP_TX`):
//!
//! ```text
//! in:  eth | ip (20) | l4 (>= 8) ...
//! out: eth | ip (20) | icmp (8) | quoted ip (20) | quoted l4 (8)   = 70 bytes
//! ```

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{
        bpf_ktime_get_ns, bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len,
    },
    programs::XdpContext,
};
use lb_common::{
    icmp::{PORT_UNREACHABLE_LEN, PortUnreachable, QUOTE_LEN, Quote},
    reason::Reason,
};

use crate::{
    maps::REJECT_TOKENS,
    parse::{ETH_HLEN, EthHdr},
    trace,
};

/// What the answer adds in front of the quote.
const GROW: usize = PORT_UNREACHABLE_LEN - QUOTE_LEN;
const REPLY_LEN: usize = ETH_HLEN + PORT_UNREACHABLE_LEN;

#[repr(C)]
#[derive(Clone, Copy)]
struct Reply {
    eth: EthHdr,
    answer: PortUnreachable,
}

const _: () = assert!(size_of::<Reply>() == REPLY_LEN);

/// Answers a packet rejected for `reason` (a Service without endpoints, a
/// ClusterIP's unexposed port), within the rate limit: the XDP action and
/// the reason to count.
#[inline(always)]
pub fn answer(ctx: &XdpContext, reason: Reason) -> (u32, Reason) {
    if !within_rate() {
        return (xdp_action::XDP_DROP, Reason::DropRejectRateLimited);
    }
    let action = match icmp_port_unreachable(ctx) {
        Ok(()) => xdp_action::XDP_TX,
        Err(()) => xdp_action::XDP_DROP,
    };
    (action, reason)
}

/// Takes a token from this CPU's bucket. A trace takes none (it changes no
/// shared state) and shows the answer a packet within the limit gets.
#[inline(always)]
fn within_rate() -> bool {
    if trace::dry_run() {
        return true;
    }
    let Some(bucket) = REJECT_TOKENS.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU slot, only this CPU writes it while we run; a
    // plain helper call.
    unsafe { (*bucket).take(bpf_ktime_get_ns()) }
}

/// Rewrites the frame (already parsed as IPv4 TCP/UDP) into an ICMP port
/// unreachable for its sender. `Err` leaves the verdict to the caller
/// (drop): IP options, a sender that must not get ICMP errors (RFC 1122:
/// unspecified, broadcast, multicast), or a failed resize.
#[inline(always)]
fn icmp_port_unreachable(ctx: &XdpContext) -> Result<(), ()> {
    let (data, data_end) = (ctx.data(), ctx.data_end());
    if data + ETH_HLEN + QUOTE_LEN > data_end {
        return Err(());
    }
    // SAFETY: bounds-checked above; copies to the stack.
    let (eth, quote) = unsafe {
        (
            core::ptr::read_unaligned(data as *const EthHdr),
            core::ptr::read_unaligned((data + ETH_HLEN) as *const Quote),
        )
    };
    let answer = PortUnreachable::answering(&quote).ok_or(())?;

    // Room for the new IP and ICMP headers in front, the rest cut off.
    // SAFETY: plain helper calls on our context.
    unsafe {
        if bpf_xdp_adjust_head(ctx.ctx, -(GROW as i32)) != 0 {
            return Err(());
        }
        let len = bpf_xdp_get_buff_len(ctx.ctx) as i64;
        if bpf_xdp_adjust_tail(ctx.ctx, (REPLY_LEN as i64 - len) as i32) != 0 {
            return Err(());
        }
    }
    let (data, data_end) = (ctx.data(), ctx.data_end());
    if data + REPLY_LEN > data_end {
        return Err(());
    }
    let reply = Reply {
        eth: EthHdr {
            dst: eth.src,
            src: eth.dst,
            ether_type_be: eth.ether_type_be,
        },
        answer,
    };
    // SAFETY: bounds-checked above.
    unsafe { core::ptr::write_unaligned(data as *mut Reply, reply) };
    Ok(())
}
