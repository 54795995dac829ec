//! ICMP errors about translated flows, both directions (the rewrites and
//! which errors qualify: `lb_common::icmp_error`). The flow is looked up
//! in the connection table by the quoted packet's tuple reversed, read
//! only: an error moves no state and refreshes nothing.
//!
//! - From the client's side, about a reply (XDP on the external devices):
//!   the quote reversed is the flow's original key (client -> frontend);
//!   the error is sent on to the backend, as if its own packet had caused
//!   it (a frag-needed lowers the pod's path MTU).
//! - From the backend's side, about a request: the quote reversed is the
//!   flow's reply key (backend -> client, or -> the node's SNAT address
//!   and port). Unmasqueraded, the error leaves by tc egress toward the
//!   client; masqueraded, it comes back to the node's address, from a
//!   remote backend at XDP, from a local one at the pod hook. It leaves
//!   from the frontend, quoting the client's packet to the frontend.
//!
//! Each hook calls in with the packet the parser called another protocol.

use aya_ebpf::programs::{TcContext, XdpContext};
use lb_common::{
    Ct4Key, Flow4, PROTO_TCP,
    icmp_error::{ERROR_HEADERS_LEN, ErrorHeaders, INNER_TCP_CSUM_OFF},
    packet::ETH_HLEN,
    reason::Reason,
};

use crate::ct::{self, Entry};

/// The flow whose reply `quoted` is (its original entry).
#[inline(always)]
fn about_reply(quoted: Flow4) -> Option<Entry> {
    ct::peek(&Ct4Key::original(quoted.reversed()))
}

/// The flow whose request `quoted` is, translated to a backend (its reply
/// entry), masqueraded or not as this hook translates.
#[inline(always)]
fn about_request(quoted: Flow4, masqueraded: bool) -> Option<Entry> {
    let entry = ct::peek(&Ct4Key::reply(quoted.reversed()))?;
    (entry.snat == masqueraded).then_some(entry)
}

/// To the backend, as the error about its own packet (`entry`: the
/// flow's original entry).
#[inline(always)]
fn toward_backend(h: &mut ErrorHeaders, entry: &Entry, mut tcp: Option<&mut u16>) {
    h.set_outer_destination(entry.nat.addr_be);
    h.set_inner_source(entry.nat, tcp.as_deref_mut());
    if entry.snat {
        h.set_inner_destination(entry.peer, tcp);
    }
}

/// From the frontend, as the error about the client's packet (`entry`:
/// the flow's reply entry).
#[inline(always)]
fn toward_client(h: &mut ErrorHeaders, entry: &Entry, mut tcp: Option<&mut u16>) {
    h.set_outer_source(entry.nat.addr_be);
    h.set_inner_destination(entry.nat, tcp.as_deref_mut());
    if entry.snat {
        h.set_outer_destination(entry.peer.addr_be);
        h.set_inner_source(entry.peer, tcp);
    }
}

/// XDP on the external devices: an error about a reply (toward the
/// backend), or about a masqueraded request (toward the client).
/// `PassOtherProtocol` for any other packet, untouched.
#[inline(always)]
pub fn at_xdp_ingress(ctx: &XdpContext) -> Reason {
    let (start, end) = (ctx.data() + ETH_HLEN, ctx.data_end());
    if start + ERROR_HEADERS_LEN > end {
        return Reason::PassOtherProtocol;
    }
    // SAFETY: bounds-checked above; plain data, 2-byte aligned fields.
    let h = unsafe { &mut *(start as *mut ErrorHeaders) };
    let Some(quoted) = h.quoted_flow() else {
        return Reason::PassOtherProtocol;
    };
    let tcp_at = start + INNER_TCP_CSUM_OFF;
    // SAFETY: bounds-checked in the condition.
    let tcp = (quoted.proto == PROTO_TCP && tcp_at + 2 <= end)
        .then(|| unsafe { &mut *(tcp_at as *mut u16) });
    if let Some(entry) = about_reply(quoted) {
        toward_backend(h, &entry, tcp);
        return Reason::IcmpErrorToBackend;
    }
    if let Some(entry) = about_request(quoted, true) {
        toward_client(h, &entry, tcp);
        return Reason::IcmpErrorToClient;
    }
    Reason::PassOtherProtocol
}

/// tc egress on the external devices: a backend's error about an
/// unmasqueraded request, leaving toward the client. `Ok(PassOtherProtocol)`
/// for any other packet; a failed store is `DropRewriteFailed`.
#[inline(always)]
pub fn at_tc_egress(ctx: &TcContext) -> Result<Reason, Reason> {
    at_skb(ctx, false).unwrap_or(Ok(Reason::PassOtherProtocol))
}

/// The pod hook: a local backend's error about a masqueraded request;
/// `None` for any other packet.
#[inline(always)]
pub fn at_pod_ingress(ctx: &TcContext) -> Option<Result<Reason, Reason>> {
    at_skb(ctx, true)
}

#[inline(always)]
fn at_skb(ctx: &TcContext, masqueraded: bool) -> Option<Result<Reason, Reason>> {
    let mut h: ErrorHeaders = ctx.load(ETH_HLEN).ok()?;
    let quoted = h.quoted_flow()?;
    let entry = about_request(quoted, masqueraded)?;
    let tcp_off = ETH_HLEN + INNER_TCP_CSUM_OFF;
    let mut tcp: Option<u16> = if quoted.proto == PROTO_TCP {
        ctx.load(tcp_off).ok()
    } else {
        None
    };
    toward_client(&mut h, &entry, tcp.as_mut());
    let fail = |_| Reason::DropRewriteFailed;
    let stored = ctx
        .store(ETH_HLEN, &h, 0)
        .map_err(fail)
        .and_then(|()| match tcp {
            Some(tcp) => ctx.store(tcp_off, &tcp, 0).map_err(fail),
            None => Ok(()),
        });
    Some(stored.map(|()| Reason::IcmpErrorToClient))
}
