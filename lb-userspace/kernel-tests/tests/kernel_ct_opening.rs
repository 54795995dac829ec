//! Only real connections create state: a TCP packet of an unknown flow
//! that is not an opening SYN creates nothing and passes untranslated.
//! kube-proxy drops such packets (nftables `ct state invalid drop`, iptables
//! KUBE-FORWARD `-m conntrack --ctstate INVALID -j DROP`); lb passes them
//! instead, so the kernel's own conntrack keeps translating the
//! connections kube-proxy's rules set up before lb replaced them (their
//! packets are ACKs lb has never seen a SYN of).

mod common;

use std::net::Ipv4Addr;

use common::*;
use lb_common::{
    PROTO_TCP, SCOPE_EXTERNAL,
    packet::tcp::{ACK, FIN, RST, SYN},
    reason::Reason,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);

#[test]
fn a_tcp_packet_of_an_unknown_flow_without_syn_creates_nothing() {
    let mut t = TestDatapath::load();
    install_service(
        &mut t.maps,
        frontend_key(NODE, 30080, PROTO_TCP, SCOPE_EXTERNAL),
        1,
        0,
        0,
        &[(1, backend(POD, 8080, PROTO_TCP))],
    );
    let openers = [ACK, SYN | ACK, RST, RST | ACK, FIN | ACK, SYN | RST, 0];
    for (i, flags) in openers.into_iter().enumerate() {
        let frame = tcp_flags_frame(CLIENT, 41000 + i as u16, NODE, 30080, flags, b"x");
        let (action, out) = t.run_xdp(&frame);
        assert_eq!(action, XDP_PASS, "flags {flags:#x}");
        assert_eq!(out, frame, "flags {flags:#x}: passed untranslated");
    }
    assert!(t.maps.connections().unwrap().is_empty());
    assert_eq!(
        t.nonzero_stats(),
        vec![(Reason::PassCtNotOpening, openers.len() as u64)]
    );

    // A SYN opens the flow; its ACKs then translate.
    t.run_xdp(&tcp_flags_frame(CLIENT, 42000, NODE, 30080, SYN, b""));
    let (_, out) = t.run_xdp(&tcp_flags_frame(CLIENT, 42000, NODE, 30080, ACK, b"y"));
    assert_eq!(check_frame(&out).dst, POD);
    assert_eq!(t.maps.connections().unwrap().len(), 2);
}
