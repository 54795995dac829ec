//! Forward: the last step of the XDP path. A translated packet that came
//! in on a device with forwarding on (`--xdp-forward`, the agent fills
//! `FORWARD_DEVICES`) is routed by a FIB lookup and, when the route leaves
//! with a known neighbour by such a device or by one that takes redirected
//! frames (`XDP_TARGETS`: a routed pod's veth), sent from XDP: its MACs set,
//! its TTL decremented, `XDP_TX` back out of the device it came by or a
//! redirect to the other one. Everything else goes to the stack
//! (`XDP_PASS`), which resolves neighbours, fragments, answers ICMP and
//! reaches pods; each outcome is counted (`lb_common::forward`).

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        bpf_fib_lookup as FibLookup, xdp_action,
    },
    helpers::generated::{bpf_fib_lookup, bpf_redirect},
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
    programs::XdpContext,
};
use lb_common::{
    csum,
    forward::{FORWARD_OUTCOME_COUNT, ForwardOutcome, MAX_FORWARD_IFINDEX},
    packet::{EthHdr, Ipv4Hdr},
};

use crate::{maps::str_eq, parse::XdpPacket, trace};

/// Ifindex -> 1 for a forwarding device (`lb_common::forward::FORWARD_DEVICES`).
#[map(name = "lb_fwd_dev_v1")]
pub static FORWARD_DEVICES: Array<u32> = Array::pinned(MAX_FORWARD_IFINDEX, 0);

/// Ifindex -> 1 for a device taking redirected frames
/// (`lb_common::forward::XDP_TARGETS`).
#[map(name = "lb_xdp_targets_v1")]
pub static XDP_TARGETS: HashMap<u32, u32> = HashMap::pinned(lb_common::forward::MAX_XDP_TARGETS, 0);

/// Outcome -> packets (`lb_common::forward::FORWARD_STATS`).
#[map(name = "lb_fwd_stats_v1")]
pub static FORWARD_STATS: PerCpuArray<u64> = PerCpuArray::pinned(FORWARD_OUTCOME_COUNT, 0);

const _: () = assert!(str_eq("lb_fwd_dev_v1", lb_common::forward::FORWARD_DEVICES));
const _: () = assert!(str_eq("lb_fwd_stats_v1", lb_common::forward::FORWARD_STATS));
const _: () = assert!(str_eq("lb_xdp_targets_v1", lb_common::forward::XDP_TARGETS));

const AF_INET: u8 = 2;

/// The XDP action for `pkt`, already translated, in `ctx`.
#[inline(always)]
pub fn xdp(ctx: &XdpContext, pkt: &XdpPacket) -> u32 {
    // A trace shows the translation; where the packet goes is the route's.
    if trace::dry_run() {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: the context's own field.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    if !forwards(ingress) {
        return xdp_action::XDP_PASS;
    }
    let (action, outcome) = route(ctx, pkt, ingress);
    count(outcome);
    action
}

#[inline(always)]
fn route(ctx: &XdpContext, pkt: &XdpPacket, ingress: u32) -> (u32, ForwardOutcome) {
    const PASS: u32 = xdp_action::XDP_PASS;
    // SAFETY: `pkt.ip` was bounds-checked by the parser.
    let ip = unsafe { *pkt.ip };
    if ip.ttl <= 1 {
        return (PASS, ForwardOutcome::StackTtl);
    }
    let mut fib = fib_params(pkt, &ip, ingress);
    // SAFETY: the helper reads and writes `fib`, which lives on our stack.
    let rc = unsafe { bpf_fib_lookup(ctx.ctx.cast(), &mut fib, size_of::<FibLookup>() as i32, 0) }
        as u32;
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS => {}
        BPF_FIB_LKUP_RET_NO_NEIGH => return (PASS, ForwardOutcome::StackNoNeighbour),
        BPF_FIB_LKUP_RET_FRAG_NEEDED => return (PASS, ForwardOutcome::StackFragNeeded),
        _ => return (PASS, ForwardOutcome::StackRoute),
    }
    if !forwards(fib.ifindex) && !takes_redirects(fib.ifindex) {
        return (PASS, ForwardOutcome::StackOtherDevice);
    }
    let Some(eth) = ethernet(ctx) else {
        return (PASS, ForwardOutcome::StackRoute);
    };
    // SAFETY: `eth` and `pkt.ip` are bounds-checked.
    unsafe {
        (*eth).dst = fib.__bindgen_anon_6.__bindgen_anon_2.dmac;
        (*eth).src = fib.__bindgen_anon_6.__bindgen_anon_2.smac;
        decrement_ttl(pkt.ip);
    }
    if fib.ifindex == ingress {
        return (xdp_action::XDP_TX, ForwardOutcome::Transmitted);
    }
    // SAFETY: a plain helper call; it returns XDP_REDIRECT, or XDP_ABORTED
    // for an ifindex it cannot use (then nothing was rewritten in vain:
    // the stack would have dropped such a frame too).
    let action = unsafe { bpf_redirect(fib.ifindex, 0) } as u32;
    (action, ForwardOutcome::Redirected)
}

/// Whether the device `ifindex` forwards in XDP.
#[inline(always)]
fn forwards(ifindex: u32) -> bool {
    FORWARD_DEVICES.get(ifindex) == Some(&1)
}

/// Whether the device `ifindex` takes frames redirected from XDP (checked
/// before anything is rewritten: a frame left to the stack must be the
/// one that came in).
#[inline(always)]
fn takes_redirects(ifindex: u32) -> bool {
    // SAFETY: the value is copied out at once.
    unsafe { XDP_TARGETS.get(&ifindex) }.is_some()
}

/// The lookup the kernel's forwarding would do for this packet as it
/// leaves: its (translated) addresses, ports, TOS and length, from the
/// device it came in by (so its policy routing and `forwarding` apply).
#[inline(always)]
fn fib_params(pkt: &XdpPacket, ip: &Ipv4Hdr, ingress: u32) -> FibLookup {
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut fib: FibLookup = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = pkt.proto;
    // A later fragment's: its first fragment's.
    fib.sport = pkt.ports.src_be;
    fib.dport = pkt.ports.dst_be;
    // The MTU check: a packet larger than the route's MTU goes to the stack.
    fib.__bindgen_anon_1.tot_len = u16::from_be(ip.tot_len_be);
    fib.__bindgen_anon_2.tos = ip.tos;
    fib.__bindgen_anon_3.ipv4_src = ip.saddr_be;
    fib.__bindgen_anon_4.ipv4_dst = ip.daddr_be;
    fib.ifindex = ingress;
    fib
}

#[inline(always)]
fn ethernet(ctx: &XdpContext) -> Option<*mut EthHdr> {
    let data = ctx.data();
    if data + size_of::<EthHdr>() > ctx.data_end() {
        return None;
    }
    Some(data as *mut EthHdr)
}

/// What a router does to a packet it forwards: TTL minus one, the header
/// checksum updated for the (TTL, protocol) word.
///
/// # Safety
/// `ip` must point at a bounds-checked IPv4 header.
#[inline(always)]
unsafe fn decrement_ttl(ip: *mut Ipv4Hdr) {
    // SAFETY: the caller's guarantee.
    unsafe {
        let proto = (*ip).proto;
        let ttl = (*ip).ttl;
        let word = |ttl: u8| u16::from_ne_bytes([ttl, proto]);
        (*ip).check = csum::replace2((*ip).check, word(ttl), word(ttl - 1));
        (*ip).ttl = ttl - 1;
    }
}

#[inline(always)]
fn count(outcome: ForwardOutcome) {
    if let Some(counter) = FORWARD_STATS.get_ptr_mut(outcome as u32) {
        // SAFETY: a per-CPU slot, only this CPU writes it while we run.
        unsafe { *counter += 1 };
    }
}
