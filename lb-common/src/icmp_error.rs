//! ICMP errors about translated flows: which errors are translated, and
//! the rewrites with their checksums, shared by the XDP and tc sides (and
//! testable here).
//!
//! An ICMP error quotes the packet that caused it (RFC 792: its IPv4
//! header and at least 8 bytes of its transport header, the ports). When
//! that packet was translated by lb, the quote carries the translated
//! addresses, which the sender of the original packet would not recognise;
//! so the error is translated back, as conntrack does for kube-proxy
//! (`nf_nat_icmp_reply_translation`) and Cilium's NAT does
//! (bpf/lib/nat.h, `snat_v4_rev_nat_handle_icmp_error`):
//!
//! - From the client's side, about a reply (quote: frontend -> client, or
//!   frontend -> client after reverse SNAT): the outer destination becomes
//!   the backend, the quote's source the backend (and its destination the
//!   node's SNAT address and port, for a masqueraded flow), so it reaches
//!   the pod's socket.
//! - From the backend's side, about a request (quote: client -> backend,
//!   or node:port -> backend when masqueraded): the outer source becomes
//!   the frontend, the quote's destination the frontend (and for a
//!   masqueraded flow the outer destination and the quote's source the
//!   client), so no pod address reaches a client.
//!
//! Types: destination unreachable (every code; fragmentation needed keeps
//! its next-hop MTU, in the ICMP header, untouched) and time exceeded
//! (both codes); any other passes untouched. The quote's IPv4 checksum,
//! its transport checksum where the quote holds it (UDP's always, TCP's
//! when 20 bytes are quoted; a UDP checksum of 0 stays 0) and the ICMP
//! checksum (over the whole quote, updated for every change in it) are
//! updated incrementally; the outer header's checksum too. Headers with IP
//! options, fragmented errors and quotes of later fragments (no ports)
//! pass untouched.

use crate::{
    Endpoint4, Flow4, PROTO_SCTP, PROTO_TCP, PROTO_UDP, csum,
    frag::{self, Fragment},
    icmp::{ICMP_DEST_UNREACH, IPPROTO_ICMP},
    packet::{Ipv4Hdr, Ports, TCP_CSUM_OFF},
};

/// Time exceeded (TTL, 0; reassembly, 1).
pub const ICMP_TIME_EXCEEDED: u8 = 11;
/// Fragmentation needed and DF set (destination unreachable).
pub const ICMP_FRAG_NEEDED: u8 = 4;

/// The headers of an ICMP error through the quote's ports and the next
/// four bytes (UDP's length and checksum, TCP's sequence number), as they
/// follow the Ethernet header.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ErrorHeaders {
    pub outer: Ipv4Hdr,
    pub icmp_type: u8,
    pub code: u8,
    pub icmp_check: u16,
    /// Unused, or the next-hop MTU of fragmentation needed.
    pub rest: [u16; 2],
    pub inner: Ipv4Hdr,
    pub inner_ports: Ports,
    pub inner_l4_rest: [u16; 2],
}

/// Bytes of [`ErrorHeaders`].
pub const ERROR_HEADERS_LEN: usize = 56;
const _: () = assert!(size_of::<ErrorHeaders>() == ERROR_HEADERS_LEN);

/// Where the quote's TCP checksum sits, from the start of [`ErrorHeaders`]
/// (past the 8 bytes the quote always holds).
pub const INNER_TCP_CSUM_OFF: usize = 20 + 8 + 20 + TCP_CSUM_OFF;

impl ErrorHeaders {
    /// The quoted packet's tuple (the packet that caused the error), when
    /// this is an error lb may translate: see the module's notes.
    #[inline(always)]
    pub fn quoted_flow(&self) -> Option<Flow4> {
        let (outer, inner) = (self.outer, self.inner);
        if outer.ver_ihl != 0x45
            || outer.proto != IPPROTO_ICMP
            || frag::classify(outer.frag_off_be) != Fragment::Whole
            || !translated_type(self.icmp_type, self.code)
            || inner.ver_ihl != 0x45
            || frag::classify(inner.frag_off_be) == Fragment::Later
            || !matches!(inner.proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP)
            // An error goes to the source of the packet it quotes.
            || outer.daddr_be != inner.saddr_be
        {
            return None;
        }
        let ports = self.inner_ports;
        Some(Flow4::new(
            Endpoint4::new(inner.saddr_be, ports.src_be),
            Endpoint4::new(inner.daddr_be, ports.dst_be),
            inner.proto,
        ))
    }

    /// Rewrites the outer source address (the error's sender).
    #[inline(always)]
    pub fn set_outer_source(&mut self, addr_be: u32) {
        self.outer.check = csum::replace4(self.outer.check, self.outer.saddr_be, addr_be);
        self.outer.saddr_be = addr_be;
    }

    /// Rewrites the outer destination address (who gets the error).
    #[inline(always)]
    pub fn set_outer_destination(&mut self, addr_be: u32) {
        self.outer.check = csum::replace4(self.outer.check, self.outer.daddr_be, addr_be);
        self.outer.daddr_be = addr_be;
    }

    /// Rewrites the quote's source to `to`; `tcp_csum` is the quote's TCP
    /// checksum when the quote holds it.
    #[inline(always)]
    pub fn set_inner_source(&mut self, to: Endpoint4, tcp_csum: Option<&mut u16>) {
        let from = Endpoint4::new(self.inner.saddr_be, self.inner_ports.src_be);
        self.inner.saddr_be = to.addr_be;
        self.inner_ports.src_be = to.port_be;
        self.inner_changed(from, to, tcp_csum);
    }

    /// Rewrites the quote's destination to `to` (see [`Self::set_inner_source`]).
    #[inline(always)]
    pub fn set_inner_destination(&mut self, to: Endpoint4, tcp_csum: Option<&mut u16>) {
        let from = Endpoint4::new(self.inner.daddr_be, self.inner_ports.dst_be);
        self.inner.daddr_be = to.addr_be;
        self.inner_ports.dst_be = to.port_be;
        self.inner_changed(from, to, tcp_csum);
    }

    /// The checksums after one end of the quote went `from` -> `to`: the
    /// quote's IPv4 and transport checksums, and the ICMP checksum for
    /// every 16 bits of the quote that changed.
    #[inline(always)]
    fn inner_changed(&mut self, from: Endpoint4, to: Endpoint4, tcp_csum: Option<&mut u16>) {
        let mut icmp = csum::replace4(self.icmp_check, from.addr_be, to.addr_be);
        icmp = csum::replace2(icmp, from.port_be, to.port_be);
        let ip_check = csum::replace4(self.inner.check, from.addr_be, to.addr_be);
        icmp = csum::replace2(icmp, self.inner.check, ip_check);
        self.inner.check = ip_check;
        let l4 = match self.inner.proto {
            PROTO_UDP => Some(&mut self.inner_l4_rest[1]),
            PROTO_TCP => tcp_csum,
            // SCTP's CRC32c covers only its own packet, which the quote
            // rarely holds whole: left as quoted.
            _ => None,
        };
        if let Some(l4) = l4 {
            let old = *l4;
            let new = csum::l4_after_rewrite(
                self.inner.proto,
                old,
                from.addr_be,
                to.addr_be,
                from.port_be,
                to.port_be,
            );
            icmp = csum::replace2(icmp, old, new);
            *l4 = new;
        }
        self.icmp_check = icmp;
    }
}

/// Destination unreachable (any code) and time exceeded (TTL or
/// reassembly); never a query.
#[inline(always)]
pub const fn translated_type(icmp_type: u8, code: u8) -> bool {
    match icmp_type {
        ICMP_DEST_UNREACH => code <= 15,
        ICMP_TIME_EXCEEDED => code <= 1,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
