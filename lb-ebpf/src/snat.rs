//! Masquerade (SNAT) of new external connections, and the translation
//! back of their replies. kube-proxy's decision (`lb_common::snat`) comes
//! as the agent encoded it: `FE_FLAG_MASQUERADE` on the frontend and the
//! node's address in `SNAT_ADDR`. The source port is claimed with the
//! flow's reply entry (`ct::create`, `ct/snat.rs`).
//!
//! - A new flow to a masquerading frontend gets the node's address and a
//!   port of 61000-65535 as source, besides the backend as destination; the
//!   stack forwards it to the backend's node (which needs `accept_local` on
//!   the device: the agent sets it, `agent/snat_sysctl.rs`).
//! - The backend's replies come back addressed to the node's address and
//!   that port, outside every frontend: [`reverse`] rewrites them to the
//!   client, from the frontend, before the stack sees them.
//! - A backend on this node is masqueraded alike once the agent attached
//!   `lb_tc_pod_ingress` (`snat_pod.rs`) to the pod-facing devices, where
//!   its pod's replies enter the node (`SNAT_LOCAL` is then 1); until then
//!   only backends whose slice names another node are (`BE_FLAG_REMOTE`),
//!   and the others (local, or on no node named: they may be a local pod)
//!   keep the client's address, counted (`snat_skipped_local_backend`) and
//!   traced, so no connection that worked unmasqueraded breaks.

use lb_common::{
    BE_FLAG_REMOTE, Backend4, Flow4,
    reason::Reason,
    snat::{SNAT_PORT_MIN, TRACE_SNAT_LOCAL_BACKEND},
};

use crate::{
    ct,
    maps::{SNAT_ADDR, SNAT_LOCAL},
    nat,
    parse::XdpPacket,
    stats, trace,
};

/// The address a new connection kube-proxy masquerades (`masquerade`,
/// `masquerade_rules::masquerades_from_outside`), sent to `backend`, is
/// masqueraded to; `None` keeps the client's (not masqueraded, no node
/// address known, or a backend not known to be on another node while the
/// pod hook is not attached).
#[inline(always)]
pub fn source_address(masquerade: bool, backend: &Backend4) -> Option<u32> {
    if !masquerade {
        return None;
    }
    let addr_be = node_address()?;
    trace::masquerade(addr_be);
    if backend.flags & BE_FLAG_REMOTE == 0 && SNAT_LOCAL.get(0).copied() != Some(1) {
        trace::step(TRACE_SNAT_LOCAL_BACKEND);
        stats::count(Reason::SnatSkippedLocalBackend);
        return None;
    }
    Some(addr_be)
}

/// Translates a reply to a masqueraded flow back (destination the client,
/// source the frontend); `None` when `flow` is none (not addressed to the
/// node's address and an SNAT port, or no such flow).
#[inline(always)]
pub fn reverse(pkt: &XdpPacket, flow: Flow4) -> Option<Reason> {
    if !to_snat_port(flow) {
        return None;
    }
    let entry = ct::lookup_reply(flow, pkt.tcp_flags, true)?;
    nat::rewrite_xdp_destination(pkt, flow.dst, entry.peer);
    nat::rewrite_xdp_source(pkt, flow.src, entry.nat);
    Some(Reason::ReverseSnat)
}

/// Whether `flow` is addressed to the node's address and an SNAT port:
/// a reply to a masqueraded flow, if any flow holds that port.
#[inline(always)]
pub fn to_snat_port(flow: Flow4) -> bool {
    u16::from_be(flow.dst.port_be) >= SNAT_PORT_MIN && node_address() == Some(flow.dst.addr_be)
}

/// The node's address (masquerade's, and its primary one), when known.
#[inline(always)]
pub fn node_address() -> Option<u32> {
    match SNAT_ADDR.get(0) {
        Some(&addr_be) if addr_be != 0 => Some(addr_be),
        _ => None,
    }
}
