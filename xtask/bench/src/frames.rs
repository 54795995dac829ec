//! Frames the per-packet section feeds to the programs, and the checks of
//! what comes out, by an independent parser (etherparse): addresses, ports
//! and every checksum.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{Result, bail};
use etherparse::{
    Icmpv4Type, NetHeaders, PacketBuilder, PacketHeaders, TransportHeader,
    icmpv4::DestUnreachableHeader,
};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Distinct client hosts on the external network 198.51.100.0/24
/// (.2 to .254: not the node's .1, not the broadcast address).
const CLIENT_HOSTS: u64 = 253;

/// The `k`-th client of a stream of new flows: every `k` a distinct
/// 5-tuple (253 hosts times 64,000 source ports before one repeats).
pub fn client(k: u64) -> SocketAddrV4 {
    let host = 2 + (k % CLIENT_HOSTS) as u8;
    let port = 1024 + ((k / CLIENT_HOSTS) % 64_000) as u16;
    SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, host), port)
}

/// A TCP segment `src` -> `dst`: a SYN opens a flow, an ACK continues it.
pub fn tcp(src: SocketAddrV4, dst: SocketAddrV4, syn: bool) -> Vec<u8> {
    tcp_segment(src, dst, syn, !syn)
}

/// A server's answer to a SYN: a SYN-ACK `src` -> `dst`.
pub fn tcp_syn_ack(src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    tcp_segment(src, dst, true, true)
}

fn tcp_segment(src: SocketAddrV4, dst: SocketAddrV4, syn: bool, ack: bool) -> Vec<u8> {
    let mut builder = PacketBuilder::ethernet2(CLIENT_MAC, NODE_MAC)
        .ipv4(src.ip().octets(), dst.ip().octets(), 64)
        .tcp(src.port(), dst.port(), 0x1234_5678, 65535);
    if syn {
        builder = builder.syn();
    }
    if ack {
        builder = builder.ack(0x0bad_cafe);
    }
    let mut out = Vec::with_capacity(builder.size(0));
    builder
        .write(&mut out, &[])
        .expect("writing to a Vec cannot fail");
    out
}

/// A UDP datagram `src` -> `dst` with a valid checksum.
pub fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, NODE_MAC)
        .ipv4(src.ip().octets(), dst.ip().octets(), 64)
        .udp(src.port(), dst.port());
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut out, payload)
        .expect("writing to a Vec cannot fail");
    out
}

/// A TCP or UDP packet as the parser saw it, its checksums valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub tcp: bool,
}

/// 0x0000 and 0xffff are the same one's-complement value: an incremental
/// update may give either where a full computation gives the other.
fn same_checksum(a: u16, b: u16) -> bool {
    a == b || (a | b == 0xffff && a & b == 0)
}

/// Parses `frame` and checks its IPv4 header checksum and its TCP/UDP
/// checksum (a UDP checksum of 0 means none).
pub fn parse_checked(frame: &[u8]) -> Result<Seen> {
    let headers = PacketHeaders::from_ethernet_slice(frame)
        .map_err(|e| anyhow::anyhow!("the frame does not parse: {e}"))?;
    let Some(NetHeaders::Ipv4(ip, _)) = &headers.net else {
        bail!("not IPv4: {:?}", headers.net);
    };
    if !same_checksum(ip.header_checksum, ip.calc_header_checksum()) {
        bail!(
            "IPv4 header checksum {:#06x}, expected {:#06x}",
            ip.header_checksum,
            ip.calc_header_checksum()
        );
    }
    let payload = headers.payload.slice();
    let (sport, dport, tcp) = match &headers.transport {
        Some(TransportHeader::Tcp(tcp)) => {
            let expected = tcp.calc_checksum_ipv4(ip, payload)?;
            if !same_checksum(tcp.checksum, expected) {
                bail!(
                    "TCP checksum {:#06x}, expected {expected:#06x}",
                    tcp.checksum
                );
            }
            (tcp.source_port, tcp.destination_port, true)
        }
        Some(TransportHeader::Udp(udp)) => {
            let expected = udp.calc_checksum_ipv4(ip, payload)?;
            if udp.checksum != 0 && udp.checksum != expected {
                bail!(
                    "UDP checksum {:#06x}, expected {expected:#06x}",
                    udp.checksum
                );
            }
            (udp.source_port, udp.destination_port, false)
        }
        other => bail!("neither TCP nor UDP: {other:?}"),
    };
    Ok(Seen {
        src: SocketAddrV4::new(ip.source.into(), sport),
        dst: SocketAddrV4::new(ip.destination.into(), dport),
        tcp,
    })
}

/// Checks that `frame` is an ICMP port unreachable from `from` to `to`,
/// its IPv4 and ICMP checksums valid.
pub fn check_port_unreachable(frame: &[u8], from: Ipv4Addr, to: Ipv4Addr) -> Result<()> {
    let headers = PacketHeaders::from_ethernet_slice(frame)
        .map_err(|e| anyhow::anyhow!("the answer does not parse: {e}"))?;
    let Some(NetHeaders::Ipv4(ip, _)) = &headers.net else {
        bail!("the answer is not IPv4: {:?}", headers.net);
    };
    if ip.header_checksum != ip.calc_header_checksum() {
        bail!("the answer's IPv4 header checksum is wrong");
    }
    if (Ipv4Addr::from(ip.source), Ipv4Addr::from(ip.destination)) != (from, to) {
        bail!(
            "the answer goes {} -> {}, expected {from} -> {to}",
            Ipv4Addr::from(ip.source),
            Ipv4Addr::from(ip.destination)
        );
    }
    let Some(TransportHeader::Icmpv4(icmp)) = &headers.transport else {
        bail!("the answer is not ICMP: {:?}", headers.transport);
    };
    if icmp.icmp_type != Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port) {
        bail!("the answer is {:?}, not port unreachable", icmp.icmp_type);
    }
    let expected = icmp.icmp_type.calc_checksum(headers.payload.slice());
    if icmp.checksum != expected {
        bail!(
            "the answer's ICMP checksum {:#06x}, expected {expected:#06x}",
            icmp.checksum
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_distinct_and_on_the_external_network() {
        let mut seen = std::collections::HashSet::new();
        for k in 0..100_000 {
            let c = client(k);
            assert!(seen.insert(c), "{c} repeats at {k}");
            let host = c.ip().octets()[3];
            assert!((2..=254).contains(&host), "{c}");
            assert_eq!(c.ip().octets()[..3], [198, 51, 100]);
        }
    }

    #[test]
    fn built_frames_pass_the_check() {
        let (src, dst) = (
            client(7),
            SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 30080),
        );
        for frame in [tcp(src, dst, true), tcp(src, dst, false)] {
            assert_eq!(
                parse_checked(&frame).unwrap(),
                Seen {
                    src,
                    dst,
                    tcp: true
                }
            );
        }
        assert!(!parse_checked(&udp(src, dst, b"x")).unwrap().tcp);
    }

    /// A rewritten address without a checksum update is caught.
    #[test]
    fn a_stale_checksum_fails_the_check() {
        let (src, dst) = (
            client(0),
            SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 30080),
        );
        let mut frame = tcp(src, dst, true);
        frame[14 + 19] = 12; // destination address, last byte
        assert!(parse_checked(&frame).is_err());
        let mut frame = tcp(src, dst, true);
        frame[14 + 20 + 3] ^= 1; // destination port
        assert!(parse_checked(&frame).is_err());
    }

    #[test]
    fn a_port_unreachable_answer_passes_the_check() {
        let (node, asker) = (Ipv4Addr::new(198, 51, 100, 1), *client(3).ip());
        let question = tcp(client(3), SocketAddrV4::new(node, 30090), true);
        let builder = PacketBuilder::ethernet2(NODE_MAC, CLIENT_MAC)
            .ipv4(node.octets(), asker.octets(), 64)
            .icmpv4(Icmpv4Type::DestinationUnreachable(
                DestUnreachableHeader::Port,
            ));
        let mut answer = Vec::new();
        builder.write(&mut answer, &question[14..14 + 28]).unwrap();
        check_port_unreachable(&answer, node, asker).unwrap();
        assert!(check_port_unreachable(&answer, asker, node).is_err());
        answer[14 + 20 + 2] ^= 1; // ICMP checksum
        assert!(check_port_unreachable(&answer, node, asker).is_err());
    }

    #[test]
    fn a_non_icmp_frame_is_no_port_unreachable() {
        let frame = tcp(client(0), SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1), true);
        assert!(check_port_unreachable(&frame, Ipv4Addr::LOCALHOST, *client(0).ip()).is_err());
    }
}
