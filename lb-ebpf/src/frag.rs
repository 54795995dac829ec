//! IPv4 fragments (`lb_common::frag`): a first fragment's ports are
//! remembered under the datagram's key as this hook received it, before
//! any translation, and a later fragment gets them back, so it goes down
//! the same path as its first (the same flow, the same translation; `nat`
//! then rewrites its addresses only). Called from `parse`, so every hook
//! sees a later fragment as a packet with ports.
//!
//! A later fragment whose first was not seen (not yet: reordered; or its
//! entry was evicted) cannot be translated as its datagram is. At ingress,
//! addressed to the node's address (NodePorts, masqueraded replies), it is
//! a counted drop (`drop_frag_unseen`, Cilium's `DROP_FRAG_NOT_FOUND`);
//! anything else passes (`pass_fragment`), since it may be the node's own
//! or routed traffic lb has no part in. Leaving the node (tc), it passes.

use aya_ebpf::bindings::BPF_ANY;
use lb_common::{
    frag::{self, Frag4Key, Frag4Ports, Fragment},
    packet::{Ipv4Hdr, Ports},
    reason::Reason,
};

use crate::{maps::FRAGS4, snat, stats, trace};

#[inline(always)]
fn key(hdr: &Ipv4Hdr) -> Frag4Key {
    Frag4Key::new(hdr.saddr_be, hdr.daddr_be, hdr.id_be, hdr.proto)
}

/// Remembers the ports of a first fragment (nothing for a whole packet).
/// A refused insert is counted and the packet still translated: only its
/// later fragments suffer.
#[inline(always)]
pub fn remember_first(hdr: &Ipv4Hdr, ports: Ports) {
    if frag::classify(hdr.frag_off_be) != Fragment::First || trace::dry_run() {
        return;
    }
    let value = Frag4Ports {
        src_port_be: ports.src_be,
        dst_port_be: ports.dst_be,
    };
    if FRAGS4.insert(&key(hdr), &value, BPF_ANY as u64).is_err() {
        stats::count(Reason::FragRememberFailed);
    }
}

/// The ports of a later fragment's datagram, at ingress; a fragment
/// without (SCTP, another protocol, a first fragment it would not
/// translate, or a later one whose first was not seen) is refused with
/// its reason (see the module's notes).
#[inline(always)]
pub fn recall_at_ingress(hdr: &Ipv4Hdr) -> Result<Ports, Reason> {
    recall(hdr).ok_or_else(|| {
        if snat::node_address() == Some(hdr.daddr_be) && later_translated(hdr) {
            Reason::DropFragUnseen
        } else {
            Reason::PassFragment
        }
    })
}

/// As [`recall_at_ingress`], leaving the node: a miss passes.
#[inline(always)]
pub fn recall_at_egress(hdr: &Ipv4Hdr) -> Result<Ports, Reason> {
    recall(hdr).ok_or(Reason::PassFragment)
}

#[inline(always)]
fn later_translated(hdr: &Ipv4Hdr) -> bool {
    frag::classify(hdr.frag_off_be) == Fragment::Later && frag::translated(hdr.proto)
}

#[inline(always)]
fn recall(hdr: &Ipv4Hdr) -> Option<Ports> {
    if !later_translated(hdr) {
        return None;
    }
    // SAFETY: a valid map value pointer; copied out at once.
    let ports = unsafe { *FRAGS4.get_ptr(&key(hdr))? };
    Some(Ports {
        src_be: ports.src_port_be,
        dst_be: ports.dst_port_be,
    })
}
