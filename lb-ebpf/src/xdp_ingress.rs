//! North-south ingress: traffic from outside the node to a NodePort,
//! LoadBalancer IP or externalIP. Parse, look up, select, translate,
//! forward (in XDP where `--xdp-forward` and the route allow, see
//! [`crate::forward`]; else the stack forwards it).
//!
//! In a trace (`DRY_RUN`, see [`crate::trace`]) the same code runs, but
//! writes no connection-table entry, refreshes no last-seen time and counts
//! nothing; it records its decisions instead. The packet is still rewritten:
//! under `BPF_PROG_TEST_RUN` that is a copy, shown to the user.

use aya_ebpf::{
    bindings::xdp_action, helpers::generated::bpf_xdp_get_buff_len, macros::xdp,
    programs::XdpContext,
};
use lb_common::{
    AFFINITY_CLIENT_ADDR, Endpoint4, Flow4, FrontendValue, SCOPE_INTERNAL, reason::Reason,
};

use crate::{
    affinity, ct, debug, forward, icmp_error, masquerade_rules, nat,
    parse::{self, XdpPacket},
    readers, reject, select, service_cidr, snat, source_ranges, stats, trace,
};

/// `frags`: multi-buffer aware (jumbo frames; on veth, a program without it
/// disables TSO on the peer and caps the MTU). Headers are read from the
/// linear part only. Inlined into the program's entry point: left to
/// itself, LLVM makes the whole body a BPF-to-BPF call, a call and a stack
/// frame on every packet.
#[xdp(frags)]
#[inline(always)]
pub fn lb_xdp_ingress(ctx: XdpContext) -> u32 {
    let (action, reason) = match ingress(&ctx) {
        Ok((reason, pkt)) => (forward::xdp(&ctx, &pkt), reason),
        Err(Verdict::Pass(reason)) => (xdp_action::XDP_PASS, reason),
        Err(Verdict::Drop(reason)) => (xdp_action::XDP_DROP, reason),
        Err(Verdict::Reject(reason)) => reject::answer(&ctx, reason),
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
    /// No endpoints at all, or a ClusterIP's port its Service does not
    /// expose: answer with ICMP port unreachable.
    Reject(Reason),
}

impl From<Reason> for Verdict {
    fn from(reason: Reason) -> Self {
        Verdict::Pass(reason)
    }
}

/// A translated packet: why, and the packet to forward.
#[inline(always)]
fn ingress(ctx: &XdpContext) -> Result<(Reason, XdpPacket), Verdict> {
    // Parse.
    // SAFETY: a plain helper call on our context.
    let buff_len = || unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    let pkt = match parse::xdp_ipv4(ctx.data(), ctx.data_end(), buff_len) {
        Ok(pkt) => pkt,
        // Perhaps an ICMP error about a translated flow: translated or
        // not, the stack delivers it.
        Err(Reason::PassOtherProtocol) => {
            return Err(Verdict::Pass(icmp_error::at_xdp_ingress(ctx)));
        }
        Err(reason) => return Err(unparsed(reason)),
    };
    let flow = pkt.flow();

    // A reply to a masqueraded flow: translated back, to the client.
    if let Some(reason) = snat::reverse(&pkt, flow) {
        return Ok((reason, pkt));
    }

    // An assured flow that no frontend or backend write touched since its
    // last check: its connection entry alone translates it.
    if let Some(entry) = ct::lookup_unchanged(flow, pkt.tcp_flags) {
        stats::count_service(entry.service_id, Reason::DnatEstablished);
        nat::rewrite_xdp_destination(&pkt, flow.dst, entry.nat);
        return Ok((Reason::DnatEstablished, pkt));
    }

    // Look up the frontend, then the flow: a known flow keeps its backend.
    let fe = masquerade_rules::frontend_from_outside(flow.dst, flow.proto, flow.src.addr_be)
        .map_err(|allocated| no_frontend(flow, allocated.0))?;
    let (backend, source, reason) = match ct::lookup_original(flow, pkt.tcp_flags, &fe)? {
        ct::Original::Hit(entry) => {
            trace::connection(entry.backend_id);
            let source = entry.snat.then_some(entry.peer);
            (entry.nat, source, Reason::DnatEstablished)
        }
        // Select.
        ct::Original::New => {
            let (backend, source) = new_flow(&fe, flow)?;
            (backend, source, Reason::DnatNew)
        }
        ct::Original::Stale(reason) => return Err(Verdict::Drop(reason)),
    };
    stats::count_service(fe.service_id, reason);
    trace::backend(backend);

    // Translate.
    nat::rewrite_xdp_destination(&pkt, flow.dst, backend);
    if let Some(source) = source {
        trace::snat(source);
        nat::rewrite_xdp_source(&pkt, flow.src, source);
    }
    Ok((reason, pkt))
}

/// A packet the parser refused passes to the stack, but a later fragment
/// to the node whose first was not seen (`frag`) is dropped.
#[inline(always)]
fn unparsed(reason: Reason) -> Verdict {
    match reason {
        Reason::DropFragUnseen => Verdict::Drop(reason),
        reason => Verdict::Pass(reason),
    }
}

/// No frontend from outside: an internal-scope entry that is no ClusterIP
/// (a NodePort address's, for pods and the node) passes, and
/// `--service-cidr`'s rules turn away the rest of the service CIDRs
/// (`service_cidr`).
#[inline(always)]
fn no_frontend(flow: Flow4, allocated: bool) -> Verdict {
    match service_cidr::unmatched_known(flow.dst.addr_be, allocated) {
        Some(_) if select::frontend(flow.dst, flow.proto, SCOPE_INTERNAL).is_some() => {
            Verdict::Pass(Reason::PassNoService)
        }
        Some(Reason::RejectClusterIpPort) => Verdict::Reject(Reason::RejectClusterIpPort),
        Some(reason) => Verdict::Drop(reason),
        None => Verdict::Pass(Reason::PassNoService),
    }
}

/// Selects the backend of a new flow and enters the flow in the connection
/// table: the backend and, when masqueraded, the source it gets. A source
/// outside the Service's ranges, or a frontend without backends, turns it
/// away.
#[inline(always)]
fn new_flow(fe: &FrontendValue, flow: Flow4) -> Result<(Endpoint4, Option<Endpoint4>), Verdict> {
    source_ranges::check(fe, flow.src.addr_be).map_err(|reason| {
        stats::count_service(fe.service_id, reason);
        Verdict::Drop(reason)
    })?;
    if fe.backend_count == 0 {
        let reason = select::empty_reason(fe);
        stats::count_service(fe.service_id, reason);
        return Err(match reason {
            Reason::RejectNoEndpoints => Verdict::Reject(reason),
            reason => Verdict::Drop(reason),
        });
    }
    // Inside the selection window until the flow's entries are written
    // (left on every return below).
    let _reading = readers::enter();
    let pick = || select::new_flow_backend(fe, select::flow_hash(flow));
    let client = u64::from(flow.src.addr_be);
    let (backend_id, backend) =
        affinity::select(fe, AFFINITY_CLIENT_ADDR, client, pick).map_err(Verdict::Drop)?;
    let masquerade =
        masquerade_rules::masquerades_from_outside(fe, flow.src.addr_be, backend.addr_be);
    let snat_addr_be = snat::source_address(masquerade, &backend);
    let backend = backend.endpoint();
    let source =
        ct::create(flow, backend_id, backend, fe.service_id, snat_addr_be).map_err(|reason| {
            stats::count_service(fe.service_id, reason);
            Verdict::Drop(reason)
        })?;
    Ok((backend, source))
}
