//! The connection table's lifecycle, shared by the datapath (which moves
//! entries between states as packets pass) and the agent's sweep (which
//! removes what expired): states, their timeouts, and the transitions.
//!
//! The states follow the kernel's conntrack (nf_conntrack_proto_tcp.c and
//! _udp.c), reduced to what a load balancer acts on:
//!
//! ```text
//! TCP:  SYN (no ACK) -> SynSent --reply--> SynRecv --ACK from client--> Established
//!       any state --FIN--> Closing, --RST--> Closed
//! UDP and others:  first packet -> Unreplied --reply--> Replied
//!       --a packet 2 s or more after creation--> Stream
//! ```
//!
//! A flow is *assured* (the kernel's `IPS_ASSURED`) once Established (TCP,
//! the three-way handshake completed) or Stream (UDP: traffic both ways
//! and still alive after two seconds, the kernel's `udp_is_stream` rule).
//! Assured flows live in their own table, so a flood of new flows, which
//! never completes a handshake, can only displace other unassured flows:
//! the kernel's `early_drop` evicts unassured entries first for the same
//! reason.
//!
//! Timeouts (seconds, why each):
//! - SynSent 60: Cilium's `CT_SYN_TIMEOUT` (the kernel has 120). Short is
//!   harmless: a retransmitted SYN of an expired entry creates it again,
//!   on the same backend (Maglev).
//! - SynRecv 60: the kernel's `nf_conntrack_tcp_timeout_syn_recv`.
//! - Established 86,400: kube-proxy's own `--conntrack-tcp-timeout-established`
//!   default (24h), which it writes into the kernel's sysctl; the kernel's
//!   5 days and Cilium's 6h are the two sides of it.
//! - Closing 120 (a FIN seen): the kernel's `fin_wait` and `time_wait`; every
//!   packet refreshes it, so a half-closed connection that still sends lives on.
//! - Closed 10 (an RST seen): the kernel's `close` and Cilium's `CT_CLOSE_TIMEOUT`.
//! - Unreplied and Replied 30, Stream 120: the kernel's `udp_timeout` and
//!   `udp_timeout_stream` (kube-proxy leaves both as the kernel has them).
//!
//! SCTP has states of its own (`sctp`: INIT opens, COOKIE ACK assures,
//! the kernel's SCTP timeouts). For SCTP the functions' `tcp_flags`
//! argument is the type of the packet's first chunk (what the parsers put
//! in the packet's flags byte).

pub mod generation;
mod sctp;

pub use sctp::*;

use crate::{PROTO_SCTP, PROTO_TCP, packet::tcp};

/// `Ct4Value::state`.
pub const CT_SYN_SENT: u8 = 1;
pub const CT_SYN_RECV: u8 = 2;
pub const CT_ESTABLISHED: u8 = 3;
pub const CT_CLOSING: u8 = 4;
pub const CT_CLOSED: u8 = 5;
pub const CT_UNREPLIED: u8 = 6;
pub const CT_REPLIED: u8 = 7;
pub const CT_STREAM: u8 = 8;

pub const TIMEOUT_SYN_SENT_S: u32 = 60;
pub const TIMEOUT_SYN_RECV_S: u32 = 60;
pub const TIMEOUT_ESTABLISHED_S: u32 = 86_400;
pub const TIMEOUT_CLOSING_S: u32 = 120;
pub const TIMEOUT_CLOSED_S: u32 = 10;
pub const TIMEOUT_UDP_S: u32 = 30;
pub const TIMEOUT_UDP_STREAM_S: u32 = 120;
/// The kernel's `udp_is_stream`: a UDP flow is assured once traffic went
/// both ways and it is still alive this long after its first packet.
pub const UDP_STREAM_AFTER_S: u32 = 2;

/// The seconds of a `CLOCK_MONOTONIC` reading in nanoseconds, the one
/// clock of every timestamp in the maps: the datapath's
/// `bpf_ktime_get_coarse_ns()` and the agent's `clock_gettime` count from
/// the same origin (boot), and both sides convert with this function, so
/// they agree on every second's bounds.
///
/// Without a division: it runs on every established packet, where a 64-bit
/// division costs about 2 ns (BPF has no multiply-high, so LLVM cannot turn
/// a division by a constant into one). Units of 2^20 ns (1.048576 ms)
/// times 2^20 / 10^9 as 2,251,800 / 2^31: a second is 953 or 954 units
/// (1 ms of jitter at its bounds), and the clock runs 0.08 ppm fast (7 ms a
/// day). Good for 2^61 ns of uptime (73 years), past which it wraps.
#[inline(always)]
pub const fn seconds(ns: u64) -> u32 {
    ((ns >> 20).wrapping_mul(SECOND_PER_2POW20_NS) >> 31) as u32
}

/// 2^20 / 10^9 in units of 2^-31 (rounded up).
const SECOND_PER_2POW20_NS: u64 = 2_251_800;

/// The seconds of a `clock_gettime` reading (see [`seconds`]).
#[inline(always)]
pub const fn timespec_seconds(tv_sec: u64, tv_nsec: u64) -> u32 {
    seconds(tv_sec.wrapping_mul(1_000_000_000).wrapping_add(tv_nsec))
}

/// Which way a packet goes in its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client -> frontend (XDP ingress).
    Original,
    /// Backend -> client (tc egress).
    Reply,
}

/// How long an entry in `state` lives without a packet.
#[inline(always)]
pub const fn timeout_s(state: u8) -> u32 {
    match state {
        CT_SYN_SENT => TIMEOUT_SYN_SENT_S,
        CT_SYN_RECV => TIMEOUT_SYN_RECV_S,
        CT_ESTABLISHED => TIMEOUT_ESTABLISHED_S,
        CT_CLOSING => TIMEOUT_CLOSING_S,
        CT_CLOSED => TIMEOUT_CLOSED_S,
        CT_STREAM => TIMEOUT_UDP_STREAM_S,
        CT_SCTP_COOKIE_WAIT => TIMEOUT_SCTP_COOKIE_WAIT_S,
        CT_SCTP_COOKIE_ECHOED => TIMEOUT_SCTP_COOKIE_ECHOED_S,
        CT_SCTP_ESTABLISHED => TIMEOUT_SCTP_ESTABLISHED_S,
        CT_SCTP_SHUTDOWN => TIMEOUT_SCTP_SHUTDOWN_S,
        // Unreplied, Replied, and anything this build does not know.
        _ => TIMEOUT_UDP_S,
    }
}

/// Whether an entry last seen at `last_seen_s` in `state` has expired at `now_s`.
#[inline(always)]
pub const fn expired(state: u8, last_seen_s: u32, now_s: u32) -> bool {
    now_s > last_seen_s && now_s - last_seen_s > timeout_s(state)
}

/// Whether a flow in `state` is closing or closed (TCP after a FIN or an
/// RST, an SCTP association shutting down or aborted): still in the table
/// for its timeout, no longer a load on its backend.
#[inline(always)]
pub const fn is_ending(state: u8) -> bool {
    matches!(state, CT_CLOSING | CT_CLOSED) || sctp_ending(state)
}

/// Assured flows live in the established table.
#[inline(always)]
pub const fn is_assured(state: u8) -> bool {
    matches!(state, CT_ESTABLISHED | CT_STREAM | CT_SCTP_ESTABLISHED)
}

/// Whether a flow of `proto` is a connection whose packets other than
/// its opening keep their backend while it is gone (TCP, SCTP), rather
/// than a stream of datagrams that choose again (UDP).
#[inline(always)]
pub const fn is_connection(proto: u8) -> bool {
    proto == PROTO_TCP || proto == PROTO_SCTP
}

/// Whether a packet of an unknown flow may create entries: for TCP only a
/// SYN without ACK (an opening), for SCTP only an INIT, for other
/// protocols any packet.
#[inline(always)]
pub const fn opens_flow(proto: u8, tcp_flags: u8) -> bool {
    match proto {
        PROTO_TCP => tcp_flags & (tcp::SYN | tcp::ACK | tcp::RST) == tcp::SYN,
        PROTO_SCTP => sctp_opens_flow(tcp_flags),
        _ => true,
    }
}

/// Whether a TCP SYN (without ACK) meets an entry of a connection that was
/// closing or closed: the client reuses the port for a new connection
/// (the kernel reopens from TIME_WAIT/CLOSE likewise).
#[inline(always)]
pub const fn reopens(proto: u8, state: u8, tcp_flags: u8) -> bool {
    (proto == PROTO_TCP
        && matches!(state, CT_CLOSING | CT_CLOSED)
        && tcp_flags & (tcp::SYN | tcp::ACK) == tcp::SYN)
        || (proto == PROTO_SCTP && sctp_reopens(state, tcp_flags))
}

/// Whether a flow in `state`, last seen at `last_seen_s`, gives up its
/// entries to a new flow that needs one of its keys: a TCP connection
/// that is closing or closed (its port is free to reuse, as the kernel
/// reopens from TIME_WAIT/CLOSE), or any flow past its timeout that the
/// sweep has not removed yet. A live flow never does.
#[inline(always)]
pub const fn yields_to_new_flow(proto: u8, state: u8, last_seen_s: u32, now_s: u32) -> bool {
    (proto == PROTO_TCP && matches!(state, CT_CLOSING | CT_CLOSED))
        || (proto == PROTO_SCTP && sctp_ending(state))
        || expired(state, last_seen_s, now_s)
}

/// The state a new flow starts in.
#[inline(always)]
pub const fn initial_state(proto: u8) -> u8 {
    match proto {
        PROTO_TCP => CT_SYN_SENT,
        PROTO_SCTP => CT_SCTP_COOKIE_WAIT,
        _ => CT_UNREPLIED,
    }
}

/// The state after a packet going `dir` with `tcp_flags` (0 for UDP), at
/// `now_s`, of a flow created at `created_s`.
#[inline(always)]
pub const fn next_state(
    proto: u8,
    state: u8,
    dir: Direction,
    tcp_flags: u8,
    created_s: u32,
    now_s: u32,
) -> u8 {
    if proto == PROTO_TCP {
        if tcp_flags & tcp::RST != 0 {
            return CT_CLOSED;
        }
        if tcp_flags & tcp::FIN != 0 && state != CT_CLOSED {
            return CT_CLOSING;
        }
        return match (state, dir) {
            (CT_SYN_SENT, Direction::Reply) => CT_SYN_RECV,
            (CT_SYN_RECV, Direction::Original) if tcp_flags & (tcp::SYN | tcp::ACK) == tcp::ACK => {
                CT_ESTABLISHED
            }
            _ => state,
        };
    }
    if proto == PROTO_SCTP {
        return sctp_next_state(state, dir, tcp_flags);
    }
    match (state, dir) {
        (CT_UNREPLIED, Direction::Reply) => CT_REPLIED,
        // Only a clock past the start counts an age: a CPU's cached second
        // may be one behind the second another CPU created the flow at
        // (the datapath's per-CPU clock cache, for at most one tick).
        (CT_REPLIED, _) if now_s > created_s && now_s - created_s >= UDP_STREAM_AFTER_S => {
            CT_STREAM
        }
        _ => state,
    }
}

/// Entries of the table of new flows for `ct_entries` in the assured one.
pub const fn new_table_entries(ct_entries: u32) -> u32 {
    let entries = ct_entries / crate::CT_NEW_SHARE;
    if entries == 0 { 1 } else { entries }
}

/// A state's name for operators (`lb conntrack`, metrics labels).
pub const fn state_name(state: u8) -> &'static str {
    match state {
        CT_SYN_SENT => "syn_sent",
        CT_SYN_RECV => "syn_recv",
        CT_ESTABLISHED => "established",
        CT_CLOSING => "closing",
        CT_CLOSED => "closed",
        CT_UNREPLIED => "unreplied",
        CT_REPLIED => "replied",
        CT_STREAM => "stream",
        CT_SCTP_COOKIE_WAIT => "sctp_cookie_wait",
        CT_SCTP_COOKIE_ECHOED => "sctp_cookie_echoed",
        CT_SCTP_ESTABLISHED => "sctp_established",
        CT_SCTP_SHUTDOWN => "sctp_shutdown",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests;
