use super::*;
use crate::{PROTO_UDP, packet::tcp::*};

const T: u8 = PROTO_TCP;

/// The kernel's TCP tracking (nf_conntrack_proto_tcp.c): SYN_SENT until the
/// reply, SYN_RECV until the client's ACK, then ESTABLISHED (assured).
#[test]
fn tcp_handshake_walks_syn_sent_syn_recv_established() {
    assert_eq!(initial_state(T), CT_SYN_SENT);
    let s = next_state(T, CT_SYN_SENT, Direction::Original, SYN, 0, 0);
    assert_eq!(s, CT_SYN_SENT, "a retransmitted SYN changes nothing");
    let s = next_state(T, s, Direction::Reply, SYN | ACK, 0, 0);
    assert_eq!(s, CT_SYN_RECV);
    assert!(!is_assured(s));
    let s = next_state(T, s, Direction::Original, ACK, 0, 0);
    assert_eq!(s, CT_ESTABLISHED);
    assert!(is_assured(s));
}

/// A spoofed SYN never sees the client's ACK: it never becomes assured,
/// however many SYN-ACKs the backend sends.
#[test]
fn tcp_without_the_clients_ack_is_never_assured() {
    let mut s = initial_state(T);
    for _ in 0..3 {
        s = next_state(T, s, Direction::Reply, SYN | ACK, 0, 0);
        s = next_state(T, s, Direction::Original, SYN, 0, 0);
    }
    assert_eq!(s, CT_SYN_RECV);
}

#[test]
fn fin_closes_and_rst_closes_at_once() {
    let s = next_state(T, CT_ESTABLISHED, Direction::Reply, FIN | ACK, 0, 0);
    assert_eq!(s, CT_CLOSING);
    assert_eq!(next_state(T, s, Direction::Original, ACK, 0, 0), CT_CLOSING);
    assert_eq!(next_state(T, s, Direction::Original, RST, 0, 0), CT_CLOSED);
    assert_eq!(
        next_state(T, CT_CLOSED, Direction::Original, FIN, 0, 0),
        CT_CLOSED
    );
    assert!(timeout_s(CT_CLOSED) < timeout_s(CT_CLOSING));
    assert!(timeout_s(CT_CLOSING) < timeout_s(CT_ESTABLISHED));
}

/// kube-proxy's invalid-state rule (`ct state invalid drop`) and the kernel
/// with tcp_loose=0: only a SYN opens a TCP flow.
#[test]
fn only_a_bare_syn_opens_a_tcp_flow() {
    assert!(opens_flow(T, SYN));
    for flags in [0, ACK, SYN | ACK, RST, SYN | RST, FIN | ACK] {
        assert!(!opens_flow(T, flags), "flags {flags:#x}");
    }
    assert!(opens_flow(PROTO_UDP, 0));
}

#[test]
fn a_syn_on_a_closed_flow_reopens_it() {
    assert!(reopens(T, CT_CLOSING, SYN));
    assert!(reopens(T, CT_CLOSED, SYN));
    assert!(!reopens(T, CT_ESTABLISHED, SYN));
    assert!(!reopens(T, CT_CLOSED, SYN | ACK));
}

/// The kernel's udp_is_stream: assured after traffic both ways that is
/// still alive two seconds after the first packet.
#[test]
fn udp_is_assured_only_after_a_reply_and_two_seconds() {
    let u = PROTO_UDP;
    assert_eq!(initial_state(u), CT_UNREPLIED);
    assert_eq!(
        next_state(u, CT_UNREPLIED, Direction::Original, 0, 100, 105),
        CT_UNREPLIED
    );
    let s = next_state(u, CT_UNREPLIED, Direction::Reply, 0, 100, 100);
    assert_eq!(s, CT_REPLIED);
    assert_eq!(
        next_state(u, s, Direction::Original, 0, 100, 101),
        CT_REPLIED
    );
    assert_eq!(
        next_state(u, s, Direction::Original, 0, 100, 102),
        CT_STREAM
    );
    assert!(is_assured(CT_STREAM));
}

/// A clock a second behind the flow's creation (the datapath's per-CPU
/// cached second, for at most one tick) is no age: the flow is not taken
/// for two seconds old.
#[test]
fn a_clock_behind_the_creation_makes_no_udp_stream() {
    let u = PROTO_UDP;
    assert_eq!(
        next_state(u, CT_REPLIED, Direction::Original, 0, 100, 99),
        CT_REPLIED
    );
    assert_eq!(
        next_state(u, CT_REPLIED, Direction::Reply, 0, 100, 99),
        CT_REPLIED
    );
}

#[test]
fn entries_expire_after_their_states_timeout_only() {
    assert!(!expired(CT_UNREPLIED, 1000, 1000 + TIMEOUT_UDP_S));
    assert!(expired(CT_UNREPLIED, 1000, 1001 + TIMEOUT_UDP_S));
    assert!(!expired(CT_ESTABLISHED, 1000, 1001 + TIMEOUT_UDP_S));
    // A last-seen time ahead of the clock (another CPU's newer write) is fresh.
    assert!(!expired(CT_CLOSED, 2000, 1000));
}

const S: u8 = crate::PROTO_SCTP;

/// The kernel's SCTP tracking (nf_conntrack_proto_sctp.c): an INIT creates
/// the entry in COOKIE_WAIT, the client's COOKIE ECHO makes it
/// COOKIE_ECHOED, the backend's COOKIE ACK ESTABLISHED and assured; the
/// INIT ACK and DATA in between change nothing.
#[test]
fn sctp_handshake_walks_cookie_wait_cookie_echoed_established() {
    use crate::sctp::chunk;
    assert!(opens_flow(S, chunk::INIT));
    assert_eq!(initial_state(S), CT_SCTP_COOKIE_WAIT);
    let s = next_state(
        S,
        CT_SCTP_COOKIE_WAIT,
        Direction::Reply,
        chunk::INIT_ACK,
        0,
        0,
    );
    assert_eq!(s, CT_SCTP_COOKIE_WAIT);
    let s = next_state(S, s, Direction::Original, chunk::COOKIE_ECHO, 0, 0);
    assert_eq!(s, CT_SCTP_COOKIE_ECHOED);
    assert!(!is_assured(s));
    let s = next_state(S, s, Direction::Reply, chunk::COOKIE_ACK, 0, 0);
    assert_eq!(s, CT_SCTP_ESTABLISHED);
    assert!(is_assured(s));
    for c in [
        chunk::DATA,
        chunk::SACK,
        chunk::HEARTBEAT,
        chunk::HEARTBEAT_ACK,
    ] {
        assert_eq!(next_state(S, s, Direction::Original, c, 0, 100), s);
        assert_eq!(next_state(S, s, Direction::Reply, c, 0, 100), s);
    }
    // The kernel's sctp_timeouts.
    assert_eq!(timeout_s(CT_SCTP_COOKIE_WAIT), 3);
    assert_eq!(timeout_s(CT_SCTP_COOKIE_ECHOED), 3);
    assert_eq!(timeout_s(CT_SCTP_ESTABLISHED), 210);
    assert_eq!(timeout_s(CT_SCTP_SHUTDOWN), 3);
    assert_eq!(timeout_s(CT_CLOSED), 10);
}

/// Only an INIT opens an SCTP flow (the kernel's sctp_new); a COOKIE ACK
/// in the wrong direction or state assures nothing.
#[test]
fn sctp_only_init_opens_and_only_the_answered_cookie_assures() {
    use crate::sctp::chunk;
    for c in [
        chunk::DATA,
        chunk::INIT_ACK,
        chunk::COOKIE_ECHO,
        chunk::ABORT,
        chunk::SHUTDOWN,
    ] {
        assert!(!opens_flow(S, c), "chunk {c}");
    }
    let s = next_state(
        S,
        CT_SCTP_COOKIE_WAIT,
        Direction::Reply,
        chunk::COOKIE_ACK,
        0,
        0,
    );
    assert_eq!(
        s, CT_SCTP_COOKIE_WAIT,
        "a COOKIE ACK before the COOKIE ECHO"
    );
    let s = next_state(
        S,
        CT_SCTP_COOKIE_ECHOED,
        Direction::Original,
        chunk::COOKIE_ACK,
        0,
        0,
    );
    assert_eq!(s, CT_SCTP_COOKIE_ECHOED, "a COOKIE ACK from the client");
    assert!(is_connection(S) && is_connection(T) && !is_connection(PROTO_UDP));
}

/// SHUTDOWN and ABORT end an association; an INIT on an ending one opens
/// a new flow, and an ending association yields its keys to a new flow.
#[test]
fn sctp_shutdown_and_abort_end_and_init_reopens() {
    use crate::sctp::chunk;
    let s = next_state(
        S,
        CT_SCTP_ESTABLISHED,
        Direction::Original,
        chunk::SHUTDOWN,
        0,
        0,
    );
    assert_eq!(s, CT_SCTP_SHUTDOWN);
    let s = next_state(S, s, Direction::Reply, chunk::SHUTDOWN_ACK, 0, 0);
    assert_eq!(s, CT_SCTP_SHUTDOWN);
    assert_eq!(
        next_state(S, s, Direction::Original, chunk::SHUTDOWN_COMPLETE, 0, 0),
        CT_CLOSED
    );
    assert_eq!(
        next_state(S, CT_SCTP_ESTABLISHED, Direction::Reply, chunk::ABORT, 0, 0),
        CT_CLOSED
    );
    assert!(reopens(S, CT_SCTP_SHUTDOWN, chunk::INIT));
    assert!(reopens(S, CT_CLOSED, chunk::INIT));
    assert!(!reopens(S, CT_SCTP_ESTABLISHED, chunk::INIT));
    assert!(!reopens(S, CT_CLOSED, chunk::DATA));
    assert!(yields_to_new_flow(S, CT_SCTP_SHUTDOWN, 5, 5));
    assert!(!yields_to_new_flow(S, CT_SCTP_ESTABLISHED, 5, 5));
    assert!(yields_to_new_flow(S, CT_SCTP_ESTABLISHED, 5, 5 + 211));
    assert_eq!(state_name(CT_SCTP_ESTABLISHED), "sctp_established");
}

const NS: u64 = 1_000_000_000;

/// The clock without a division stays within a second (plus its 0.08 ppm)
/// of the true one, from boot to 73 years of uptime.
#[test]
fn seconds_follow_the_true_clock() {
    for ns in [
        0,
        NS - 1,
        NS,
        59 * NS + NS / 2,
        86_400 * NS,
        3 * 365 * 86_400 * NS,
        1 << 61,
    ] {
        let true_s = ns / NS;
        let drift = true_s / 10_000_000 + 1;
        let s = u64::from(seconds(ns));
        assert!(
            s.abs_diff(true_s) <= drift,
            "{ns} ns: {s} s against {true_s} s"
        );
    }
    assert_eq!(seconds(0), 0);
    assert_eq!(timespec_seconds(86_400, 5), seconds(86_400 * NS + 5));
}

proptest::proptest! {
    /// Never backwards, and a span of `step` ns crosses as many second
    /// bounds as the true clock would, within one 2^20 ns unit (each bound
    /// falls on one): so every second lasts 1 s within 1.1 ms, and the
    /// timeouts, the two seconds that make a UDP stream and the
    /// generation's per-second budget hold.
    #[test]
    fn seconds_are_monotonic_and_a_second_long(ns in 0u64..(1 << 61), step in 0u64..(3 * NS)) {
        const SLACK: u64 = 1_100_000;
        let (a, b) = (seconds(ns), seconds(ns + step));
        proptest::prop_assert!(a <= b);
        let crossed = u64::from(b - a);
        proptest::prop_assert!(crossed * NS <= step + NS + SLACK, "{crossed} bounds in {step} ns");
        proptest::prop_assert!((crossed + 1) * NS + SLACK >= step, "{crossed} bounds in {step} ns");
    }
}
