//! The recheck generation: when the datapath may skip re-checking an
//! established flow's backend (`ct/recheck.rs`'s `still_valid`, a hash
//! lookup per packet otherwise).
//!
//! The agent bumps one counter (`CT_GENERATION`, slot 0) after every write
//! to the backends map (a backend added, changed, removed, its id reused)
//! and to the frontends map (a frontend added, given to another Service
//! port, changed, removed): everything `still_valid` reads. An original
//! entry remembers the generation
//! (truncated to 16 bits, `Ct4Value::checked_gen`) its last recheck passed
//! at. A packet may skip the recheck only when [`may_skip_recheck`] says
//! so: the same generation (the backend cannot have changed since), the
//! same Service port, not a packet that may open a flow (those choose
//! again when the backend is gone or draining, so they always ask), and
//! the same coarse second as the flow's last packet (a recheck at least
//! once a second: an idle flow is rechecked by its next packet; and the
//! agent bumps fewer than 2^15 times in any second, waiting out the rest
//! of a second whose budget a bulk removal spent, so the 16 bits cannot
//! wrap into a false match, even in a datapath second that a CPU's cached
//! clock stretched a tick into the next). The agent's bump follows its map
//! write, so the first packet that sees the new generation sees the change.
//!
//! Because frontend writes move it too, an assured flow's packet that may
//! skip the recheck may skip the frontend lookup as well
//! ([`may_skip_frontend`]): the frontend its entry was checked against is
//! still there, for the same Service port. That packet then costs one
//! hash lookup (its connection entry) instead of two.

use super::opens_flow;

/// Array of one `u32`, mapped by the agent (`BPF_F_MMAPABLE`): bumped
/// with a plain atomic add, no syscall per backend write.
pub const CT_GENERATION: &str = "lb_ct_gen_v1";

/// The 16 bits of the generation an entry remembers; 0 is never a
/// generation an entry passed at (the value of entries made before the
/// generation existed, and of a counter never bumped).
#[inline(always)]
pub const fn entry_generation(generation: u32) -> u16 {
    generation as u16
}

/// Whether a packet (`proto`, `tcp_flags`) of a flow whose original entry
/// passed its recheck at generation `checked_gen`, for the Service port
/// `entry_service`, and last saw a packet at `last_seen_s`, may skip the
/// recheck now (`generation`, `service_id` the frontend's, `now_s`): see
/// the module's rules.
#[inline(always)]
pub const fn may_skip_recheck(
    checked_gen: u16,
    generation: u16,
    (entry_service, service_id): (u32, u32),
    (last_seen_s, now_s): (u32, u32),
    proto: u8,
    tcp_flags: u8,
) -> bool {
    checked_gen != 0
        && checked_gen == generation
        && entry_service == service_id
        && last_seen_s == now_s
        && !opens_flow(proto, tcp_flags)
}

/// Whether a packet (`proto`, `tcp_flags`) hitting an original entry that
/// passed its recheck at `checked_gen` and last saw a packet at
/// `last_seen_s` may be translated without looking its frontend up: no
/// frontend or backend was written since that recheck (`generation`), in
/// the same coarse second (`now_s`), and not a packet that may open a
/// flow. [`may_skip_recheck`] with the entry's own Service port, which an
/// unchanged generation proves is still the frontend's.
#[inline(always)]
pub const fn may_skip_frontend(
    checked_gen: u16,
    generation: u16,
    (last_seen_s, now_s): (u32, u32),
    proto: u8,
    tcp_flags: u8,
) -> bool {
    may_skip_recheck(
        checked_gen,
        generation,
        (0, 0),
        (last_seen_s, now_s),
        proto,
        tcp_flags,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        PROTO_TCP, PROTO_UDP,
        packet::tcp::{ACK, SYN},
    };

    const SAME: (u32, u32) = (4, 4);

    #[test]
    fn an_established_packet_skips_only_when_nothing_moved() {
        assert!(may_skip_recheck(5, 5, SAME, (100, 100), PROTO_TCP, ACK));
        // A backend written since.
        assert!(!may_skip_recheck(5, 6, SAME, (100, 100), PROTO_TCP, ACK));
        // The frontend belongs to another Service port now.
        assert!(!may_skip_recheck(5, 5, (4, 9), (100, 100), PROTO_TCP, ACK));
        // The first packet of a new second: rechecked once a second.
        assert!(!may_skip_recheck(5, 5, SAME, (99, 100), PROTO_TCP, ACK));
        // Never checked (an entry from before the generation, a counter
        // never bumped).
        assert!(!may_skip_recheck(0, 0, SAME, (100, 100), PROTO_TCP, ACK));
    }

    /// A packet that may open a flow chooses again when its backend is
    /// gone or draining (kube-proxy's conntrack cleanup of UDP flows,
    /// pkg/proxy/conntrack/cleanup.go; a SYN never reaches a draining
    /// pod): it always asks.
    #[test]
    fn a_packet_that_may_open_a_flow_always_rechecks() {
        assert!(!may_skip_recheck(5, 5, SAME, (100, 100), PROTO_TCP, SYN));
        assert!(!may_skip_recheck(5, 5, SAME, (100, 100), PROTO_UDP, 0));
    }

    /// The frontend lookup is skipped on exactly the recheck's terms: a
    /// write of any frontend or backend since, a new second, a packet that
    /// may open a flow or an entry never checked all look it up.
    #[test]
    fn the_frontend_lookup_is_skipped_only_when_nothing_moved() {
        assert!(may_skip_frontend(5, 5, (100, 100), PROTO_TCP, ACK));
        assert!(!may_skip_frontend(5, 6, (100, 100), PROTO_TCP, ACK));
        assert!(!may_skip_frontend(5, 5, (99, 100), PROTO_TCP, ACK));
        assert!(!may_skip_frontend(0, 0, (100, 100), PROTO_TCP, ACK));
        assert!(!may_skip_frontend(5, 5, (100, 100), PROTO_TCP, SYN));
        assert!(!may_skip_frontend(5, 5, (100, 100), PROTO_UDP, 0));
    }

    #[test]
    fn the_entry_keeps_the_low_sixteen_bits() {
        assert_eq!(entry_generation(0x0001_0002), 2);
        assert_eq!(entry_generation(0x0001_0000), 0, "0: never a match");
    }
}
