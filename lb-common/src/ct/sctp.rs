//! SCTP's part of the connection table's lifecycle, after the kernel's
//! SCTP tracking (net/netfilter/nf_conntrack_proto_sctp.c), reduced to
//! what a load balancer acts on and read from the first chunk only (the
//! chunks that move an association's state come first: RFC 9260 forbids
//! bundling INIT, INIT ACK and SHUTDOWN COMPLETE, and puts COOKIE ECHO and
//! COOKIE ACK first):
//!
//! ```text
//! INIT (client) -> CookieWait --COOKIE ECHO (client)--> CookieEchoed
//!   --COOKIE ACK (backend)--> Established (assured)
//! any state --SHUTDOWN, SHUTDOWN ACK--> ShutDown --SHUTDOWN COMPLETE--> Closed
//! any state --ABORT--> Closed
//! ```
//!
//! Only an INIT opens a flow (the kernel's `sctp_new` creates its entry
//! from an INIT; other chunks of an unknown association are passed
//! untranslated, as TCP's non-SYN packets are), and an INIT meeting a
//! flow that is shutting down or closed opens a new one. The kernel marks
//! an association assured at the COOKIE ACK that answers a COOKIE ECHO, as
//! here.
//!
//! Timeouts: the kernel's defaults (`sctp_timeouts`): CookieWait 3 s,
//! CookieEchoed 3 s, Established 210 s (heartbeats come every 30 s, so a
//! live association is never idle that long), the shutdown states 3 s,
//! Closed 10 s (the shared `CT_CLOSED`, whose timeout is TCP's close, 10 s
//! as well). kube-proxy sets none of them.

use super::{CT_CLOSED, Direction};
use crate::sctp::chunk;

/// `Ct4Value::state` of SCTP flows (TCP's and UDP's are 1-8).
pub const CT_SCTP_COOKIE_WAIT: u8 = 9;
pub const CT_SCTP_COOKIE_ECHOED: u8 = 10;
pub const CT_SCTP_ESTABLISHED: u8 = 11;
pub const CT_SCTP_SHUTDOWN: u8 = 12;

pub const TIMEOUT_SCTP_COOKIE_WAIT_S: u32 = 3;
pub const TIMEOUT_SCTP_COOKIE_ECHOED_S: u32 = 3;
pub const TIMEOUT_SCTP_ESTABLISHED_S: u32 = 210;
pub const TIMEOUT_SCTP_SHUTDOWN_S: u32 = 3;

/// Whether an SCTP packet whose first chunk is `first_chunk` may open a
/// flow.
#[inline(always)]
pub const fn sctp_opens_flow(first_chunk: u8) -> bool {
    first_chunk == chunk::INIT
}

/// Whether an INIT meets an association that is shutting down or closed:
/// a new association on the same ports.
#[inline(always)]
pub const fn sctp_reopens(state: u8, first_chunk: u8) -> bool {
    first_chunk == chunk::INIT && matches!(state, CT_SCTP_SHUTDOWN | CT_CLOSED)
}

/// Whether the association is ending (its ports may be reused at once).
#[inline(always)]
pub const fn sctp_ending(state: u8) -> bool {
    matches!(state, CT_SCTP_SHUTDOWN | CT_CLOSED)
}

/// The state after a packet going `dir` whose first chunk is `first_chunk`.
#[inline(always)]
pub const fn sctp_next_state(state: u8, dir: Direction, first_chunk: u8) -> u8 {
    match (first_chunk, dir) {
        (chunk::ABORT, _) | (chunk::SHUTDOWN_COMPLETE, _) => CT_CLOSED,
        (chunk::SHUTDOWN, _) | (chunk::SHUTDOWN_ACK, _) if state != CT_CLOSED => CT_SCTP_SHUTDOWN,
        (chunk::COOKIE_ECHO, Direction::Original) if state == CT_SCTP_COOKIE_WAIT => {
            CT_SCTP_COOKIE_ECHOED
        }
        (chunk::COOKIE_ACK, Direction::Reply) if state == CT_SCTP_COOKIE_ECHOED => {
            CT_SCTP_ESTABLISHED
        }
        _ => state,
    }
}
