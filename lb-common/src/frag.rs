//! IPv4 fragments: the contract of the map that lets a datagram's later
//! fragments (which carry no transport header, so no ports) be translated
//! as its first one was.
//!
//! The first fragment (offset 0, more-fragments set) holds the ports: each
//! packet hook remembers them under the fragment's own key as it arrived at
//! that hook (addresses, IP id, protocol, before any translation), then
//! translates it like any packet of its flow. A later fragment (offset not
//! 0) is looked up by the same key, gets the ports back and goes down the
//! same path: the same flow, the same translation, addresses only (its IP
//! checksum; the first fragment's transport checksum covers the whole
//! datagram and gets the usual update). Entries are never deleted: the LRU
//! reclaims them, as in Cilium (bpf/lib/ipv4.h, `ipv4_handle_fragmentation`).
//!
//! TCP and UDP only: an SCTP packet's CRC32c covers the whole packet, which
//! an update at the first fragment cannot know the length of, so SCTP
//! fragments pass untranslated (`pass_fragment`), as before.

use bytemuck::{Pod, Zeroable};

use crate::{PROTO_TCP, PROTO_UDP};

/// Ports of the datagrams being fragmented: `Frag4Key -> Frag4Ports` (LRU
/// hash), shared by every packet hook (each keys a datagram as it sees it).
pub const FRAGS4: &str = "lb_frag4_v1";

/// Datagrams whose fragments are in flight at once (`--frag-entries`):
/// Cilium's default (`CILIUM_IPV4_FRAG_MAP_MAX_ENTRIES`, 8,192). An entry
/// is 16 bytes of key and value; an evicted one costs its datagram's later
/// fragments (counted `drop_frag_unseen` at XDP).
pub const DEFAULT_FRAG_ENTRIES: u32 = 8_192;

/// A datagram as one hook received it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct Frag4Key {
    pub src_addr_be: u32,
    pub dst_addr_be: u32,
    pub id_be: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// The transport ports of a fragmented datagram, as its first fragment
/// carried them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Frag4Ports {
    pub src_port_be: u16,
    pub dst_port_be: u16,
}

const _: () = assert!(size_of::<Frag4Key>() == 12);
const _: () = assert!(size_of::<Frag4Ports>() == 4);

#[cfg(feature = "user")]
// SAFETY: repr(C), bytemuck Pod (no padding, any bit pattern valid).
unsafe impl aya::Pod for Frag4Key {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for Frag4Ports {}

/// More-fragments flag, in network order.
const IP_MF_BE: u16 = 0x2000u16.to_be();
/// Fragment offset, in network order.
const IP_OFFSET_BE: u16 = 0x1fffu16.to_be();

/// Where a packet sits in its datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented.
    Whole,
    /// The first fragment: it carries the transport header.
    First,
    /// A later fragment: no transport header.
    Later,
}

/// Classifies a packet by its IPv4 `frag_off` field (network order).
#[inline(always)]
pub const fn classify(frag_off_be: u16) -> Fragment {
    if frag_off_be & IP_OFFSET_BE != 0 {
        Fragment::Later
    } else if frag_off_be & IP_MF_BE != 0 {
        Fragment::First
    } else {
        Fragment::Whole
    }
}

/// Whether the fragments of `proto` are translated (TCP and UDP).
#[inline(always)]
pub const fn translated(proto: u8) -> bool {
    proto == PROTO_TCP || proto == PROTO_UDP
}

impl Frag4Key {
    #[inline(always)]
    pub const fn new(src_addr_be: u32, dst_addr_be: u32, id_be: u16, proto: u8) -> Self {
        Self {
            src_addr_be,
            dst_addr_be,
            id_be,
            proto,
            _pad: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_the_more_fragments_flag_classify() {
        let be = |v: u16| v.to_be();
        assert_eq!(classify(be(0)), Fragment::Whole);
        assert_eq!(classify(be(0x4000)), Fragment::Whole, "DF alone");
        assert_eq!(classify(be(0x2000)), Fragment::First, "MF, offset 0");
        assert_eq!(classify(be(0x2000 | 185)), Fragment::Later, "MF, offset");
        assert_eq!(classify(be(370)), Fragment::Later, "the last fragment");
        assert_eq!(classify(be(0x1fff)), Fragment::Later);
    }
}
