//! The tc egress (reply) program under BPF_PROG_TEST_RUN: replies of flows
//! the XDP program translated get the frontend back as their source.

mod common;

use std::net::Ipv4Addr;

use common::*;
use lb_common::reason::Reason;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);

fn services(t: &mut TestDatapath) {
    tcp_and_udp_node_ports(t, NODE, POD);
}

#[test]
fn tcp_reply_gets_the_frontend_as_source() {
    let mut t = TestDatapath::load();
    services(&mut t);
    let (_, inbound) = t.run_xdp(&tcp_frame(CLIENT, 40000, NODE, 30080, true, b""));
    assert_eq!(check_frame(&inbound).dst, POD);

    let reply = tcp_frame(POD, 8080, CLIENT, 40000, false, b"HTTP/1.1 200 OK\r\n\r\n");
    let (verdict, out) = t.run_tc(&reply);

    assert_eq!(verdict, TCX_NEXT);
    assert_eq!(out.len(), reply.len());
    let p = check_frame(&out);
    assert_eq!(
        (p.src, p.sport),
        (NODE, 30080),
        "source is the frontend again"
    );
    assert_eq!((p.dst, p.dport), (CLIENT, 40000));
    assert_eq!(p.payload, b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(out[..14], reply[..14]);
    assert_eq!(
        t.nonzero_stats(),
        vec![(Reason::DnatNew, 1), (Reason::ReverseNat, 1)]
    );
}

/// A reply with IP options leaves the plain packet's direct reads
/// (`parse::skb_ipv4`) for the general rules' loads, and is translated
/// the same, its options untouched.
#[test]
fn a_reply_with_ip_options_is_translated_too() {
    let mut t = TestDatapath::load();
    services(&mut t);
    t.run_xdp(&tcp_frame(CLIENT, 40001, NODE, 30080, true, b""));
    // 8 bytes of options after the fixed header: ihl 7.
    let plain = tcp_frame(POD, 8080, CLIENT, 40001, false, b"with options");
    let reply = with_ip_options(&plain);
    check_frame(&reply);

    let (verdict, out) = t.run_tc(&reply);
    assert_eq!(verdict, TCX_NEXT);
    let p = check_frame(&out);
    assert_eq!((p.src, p.sport), (NODE, 30080));
    assert_eq!((p.dst, p.dport), (CLIENT, 40001));
    assert_eq!(p.payload, b"with options");
    assert_eq!(out[34..42], reply[34..42], "options untouched");
    assert_eq!(t.stat(Reason::ReverseNat), 1);
}

#[test]
fn udp_replies_are_translated_with_and_without_checksum() {
    let mut t = TestDatapath::load();
    services(&mut t);
    t.run_xdp(&udp_frame(CLIENT, 5353, NODE, 30053, b"query", true));

    let (verdict, out) = t.run_tc(&udp_frame(POD, 53, CLIENT, 5353, b"answer", true));
    assert_eq!(verdict, TCX_NEXT);
    let p = check_frame(&out);
    assert_ne!(p.l4_checksum, 0);
    assert_eq!(
        (p.src, p.sport, p.dst, p.dport),
        (NODE, 30053, CLIENT, 5353)
    );
    assert_eq!(p.payload, b"answer");

    let (verdict, out) = t.run_tc(&udp_frame(POD, 53, CLIENT, 5353, b"answer", false));
    assert_eq!(verdict, TCX_NEXT);
    let p = check_frame(&out);
    assert_eq!(p.l4_checksum, 0, "a zero UDP checksum stays zero");
    assert_eq!((p.src, p.sport), (NODE, 30053));
    assert_eq!(t.stat(Reason::ReverseNat), 2);
}

#[test]
fn packets_without_a_reply_entry_pass_untouched() {
    let mut t = TestDatapath::load();
    services(&mut t);
    t.run_xdp(&tcp_frame(CLIENT, 40000, NODE, 30080, true, b""));
    let frames = [
        // Another client port, another backend port, another protocol.
        tcp_frame(POD, 8080, CLIENT, 40001, false, b""),
        tcp_frame(POD, 8081, CLIENT, 40000, false, b""),
        udp_frame(POD, 8080, CLIENT, 40000, b"", true),
        // The original direction seen on egress (e.g. hairpinned): no match.
        tcp_frame(CLIENT, 40000, NODE, 30080, false, b""),
        // The node's own traffic.
        tcp_frame(NODE, 22, CLIENT, 50000, false, b"ssh"),
    ];
    for frame in &frames {
        let (verdict, out) = t.run_tc(frame);
        assert_eq!((verdict, &out), (TCX_NEXT, frame));
    }
    assert_eq!(t.stat(Reason::PassNoConnection), frames.len() as u64);
    assert_eq!(t.stat(Reason::ReverseNat), 0);
}

#[test]
fn non_ipv4_and_malformed_pass_untouched() {
    let mut t = TestDatapath::load();
    services(&mut t);
    t.run_xdp(&tcp_frame(CLIENT, 40000, NODE, 30080, true, b""));
    let reply = tcp_frame(POD, 8080, CLIENT, 40000, false, b"data");
    let mut arp = reply.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let mut ihl4 = reply.clone();
    ihl4[14] = 0x44;
    let mut too_long = reply.clone();
    let tot_len = u16::from_be_bytes([reply[16], reply[17]]) + 1;
    too_long[16..18].copy_from_slice(&tot_len.to_be_bytes());
    let cut = reply[..14 + 20 + 10].to_vec();
    for (frame, reason) in [
        (&arp, Reason::PassNotIpv4),
        (&ihl4, Reason::PassMalformed),
        (&too_long, Reason::PassMalformed),
        (&cut, Reason::PassMalformed),
    ] {
        let before = t.stat(reason);
        let (verdict, out) = t.run_tc(frame);
        assert_eq!((verdict, &out), (TCX_NEXT, frame));
        assert_eq!(t.stat(reason), before + 1, "{reason:?}");
    }
    assert_eq!(t.stat(Reason::ReverseNat), 0);
}

#[test]
fn a_reply_refreshes_its_entry_only() {
    let mut t = TestDatapath::load();
    services(&mut t);
    t.run_xdp(&tcp_frame(CLIENT, 40000, NODE, 30080, true, b""));
    let seen = |t: &TestDatapath| {
        let conns = t.maps.connections().unwrap();
        let of = |original: bool| {
            conns
                .iter()
                .find(|(k, _)| k.is_original() == original)
                .expect("both entries")
                .1
                .last_seen_s
        };
        (of(true), of(false))
    };
    // Age both entries (the refresh is per second).
    t.maps
        .rewrite_connections(|_, v| v.last_seen_s = v.last_seen_s.saturating_sub(5))
        .unwrap();
    let (original, reply) = seen(&t);

    t.run_tc(&tcp_frame(POD, 8080, CLIENT, 40000, false, b"ack"));

    let (original_after, reply_after) = seen(&t);
    assert!(reply_after > reply, "the reply entry is refreshed");
    assert_eq!(original_after, original, "the original entry is not");
}
