//! `lb trace`: run the live datapath's decisions on one crafted packet
//! without disturbing traffic.
//!
//! The embedded object is loaded a second time over the agent's pinned maps
//! with its `DRY_RUN` switch on ([`Datapath::load_existing`]): the programs
//! take exactly the decisions the attached ones take, on the same maps, but
//! write no connection entry and no counter; they record each decision in
//! their own, unpinned `lb_trace` map, which this module reads back after a
//! `BPF_PROG_TEST_RUN`.
//!
//! - [`Tracer::trace_external`] runs `lb_xdp_ingress` (north-south traffic).
//! - [`Tracer::trace_socket`] runs `lb_trace_socket`, which makes the socket
//!   hooks' decision (connect()/sendmsg() from the node's processes and
//!   pods) for the packet's destination and a socket cookie.

use std::{
    net::SocketAddrV4,
    path::Path,
    sync::{Mutex, PoisonError},
};

use anyhow::{Context as _, Result};
use aya::maps::{Array, MapData};
use lb_common::{TRACE_ENTRY_EXTERNAL, TRACE_ENTRY_SOCKET, TraceRecord, TraceRequest};

use super::{KernelMaps, loader::Datapath};
use crate::model::Protocol;

/// The datapath loaded in dry-run mode over the maps pinned by an agent.
pub struct Tracer {
    dp: Datapath,
    /// This tracer's own `lb_trace` / `lb_trace_req`; the lock also keeps
    /// one trace at a time (each one zeroes, runs and reads `lb_trace[0]`).
    trace: Mutex<(Array<MapData, TraceRecord>, Array<MapData, TraceRequest>)>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").field("dp", &self.dp).finish()
    }
}

/// What the datapath did with one traced packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceOutcome {
    /// The XDP action (`XDP_PASS` 2, `XDP_DROP` 1, `XDP_TX` 3 for a reject
    /// answered with ICMP).
    pub action: u32,
    /// The decisions taken (`TRACE_*` steps, frontend, slot, backend,
    /// final reason).
    pub record: TraceRecord,
    /// The packet as the program left it: translated, turned into an ICMP
    /// port unreachable, or untouched.
    pub packet_out: Vec<u8>,
}

impl Tracer {
    /// Loads the tracer over the datapath pinned in `pin_dir` (the agent's
    /// `--pin-dir`). Fails with a clear message when nothing is pinned
    /// there or when the maps were written by another lb version. Creates,
    /// pins and attaches nothing.
    pub fn load(pin_dir: &Path) -> Result<Tracer> {
        let dp = Datapath::load_existing(pin_dir, true)?;
        let trace = Mutex::new(dp.trace_maps()?);
        Ok(Tracer { dp, trace })
    }

    /// The live maps (names of services, tables) the traces ran against.
    pub fn maps(&self) -> Result<KernelMaps> {
        self.dp.maps()
    }

    /// The dry-run datapath itself (its programs, for inspection).
    pub fn datapath(&self) -> &Datapath {
        &self.dp
    }

    /// Traces `frame` (an Ethernet frame) as if it arrived from outside the
    /// node on an external device: `lb_xdp_ingress`.
    pub fn trace_external(&self, frame: &[u8]) -> Result<TraceOutcome> {
        self.run(frame, TRACE_ENTRY_EXTERNAL, 0, |dp, frame| {
            dp.run_xdp(frame)
        })
    }

    /// Traces what the socket hooks decide for a socket with `cookie`
    /// calling connect()/sendmsg() to `frame`'s destination (address, port
    /// and protocol): `lb_trace_socket`. A translated frame comes back with
    /// the backend as its destination.
    pub fn trace_socket(&self, frame: &[u8], cookie: u64) -> Result<TraceOutcome> {
        self.run(frame, TRACE_ENTRY_SOCKET, cookie, |dp, frame| {
            dp.run_trace_socket(frame)
        })
    }

    fn run(
        &self,
        frame: &[u8],
        entry: u8,
        cookie: u64,
        test_run: impl FnOnce(&Datapath, &[u8]) -> Result<(u32, Vec<u8>)>,
    ) -> Result<TraceOutcome> {
        let mut guard = self.trace.lock().unwrap_or_else(PoisonError::into_inner);
        let (record, request) = &mut *guard;
        let req = TraceRequest {
            cookie,
            entry,
            _pad: [0; 7],
        };
        request.set(0, &req, 0).context("writing lb_trace_req")?;
        record
            .set(0, &TraceRecord::default(), 0)
            .context("clearing lb_trace")?;
        let (action, packet_out) = test_run(&self.dp, frame)?;
        let record = record.get(&0, 0).context("reading lb_trace")?;
        Ok(TraceOutcome {
            action,
            record,
            packet_out,
        })
    }
}

/// MAC addresses of crafted frames (locally administered; the datapath
/// ignores them).
pub const FRAME_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const FRAME_DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;

/// Crafts the first packet of a flow from `src` to `dst`, with valid
/// checksums: Ethernet + IPv4 (DF, TTL 64) + a TCP SYN, an empty UDP
/// datagram, or an SCTP INIT.
pub fn build_frame(src: SocketAddrV4, dst: SocketAddrV4, protocol: Protocol) -> Vec<u8> {
    let (sport, dport) = (src.port().to_be_bytes(), dst.port().to_be_bytes());
    let mut l4 = Vec::with_capacity(32);
    l4.extend_from_slice(&sport);
    l4.extend_from_slice(&dport);
    match protocol {
        Protocol::Tcp => {
            l4.extend_from_slice(&0x1000_0000u32.to_be_bytes()); // sequence
            l4.extend_from_slice(&[0; 4]); // acknowledgment
            l4.extend_from_slice(&[5 << 4, 0x02]); // 20-byte header, SYN
            l4.extend_from_slice(&64240u16.to_be_bytes()); // window
            l4.extend_from_slice(&[0; 4]); // checksum, urgent pointer
        }
        Protocol::Udp => l4.extend_from_slice(&[0, 8, 0, 0]), // length, checksum
        Protocol::Sctp => {
            l4.extend_from_slice(&[0; 8]); // verification tag 0 (INIT), checksum
            l4.extend_from_slice(&[1, 0, 0, 20]); // INIT chunk, 20 bytes
            l4.extend_from_slice(&0x1000_0000u32.to_be_bytes()); // initiate tag
            l4.extend_from_slice(&65535u32.to_be_bytes()); // a_rwnd
            l4.extend_from_slice(&[0, 1, 0, 1]); // outbound, inbound streams
            l4.extend_from_slice(&0x1000_0000u32.to_be_bytes()); // initial TSN
        }
    }
    let proto = protocol.ip_number();
    let (saddr, daddr) = (src.ip().octets(), dst.ip().octets());
    match protocol {
        Protocol::Tcp | Protocol::Udp => {
            let mut pseudo = Vec::with_capacity(12);
            pseudo.extend_from_slice(&saddr);
            pseudo.extend_from_slice(&daddr);
            pseudo.extend_from_slice(&[0, proto]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            let mut sum = internet_checksum(&[&pseudo, &l4]);
            let at = if protocol == Protocol::Tcp { 16 } else { 6 };
            if protocol == Protocol::Udp && sum == 0 {
                sum = 0xffff; // zero means "no checksum" (RFC 768)
            }
            l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
        Protocol::Sctp => {
            // CRC32c, stored little-endian (RFC 9260, appendix A).
            let crc = crc32c(&l4);
            l4[8..12].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let mut ip = [0u8; IPV4_HLEN];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((IPV4_HLEN + l4.len()) as u16).to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&saddr);
    ip[16..20].copy_from_slice(&daddr);
    let sum = internet_checksum(&[&ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());

    let mut frame = Vec::with_capacity(ETH_HLEN + IPV4_HLEN + l4.len());
    frame.extend_from_slice(&FRAME_DST_MAC);
    frame.extend_from_slice(&FRAME_SRC_MAC);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&l4);
    frame
}

/// The RFC 1071 checksum of the concatenated `parts` (each of even length
/// except the last).
fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for part in parts {
        for word in part.chunks(2) {
            let hi = u32::from(word[0]) << 8;
            sum += hi | word.get(1).map_or(0, |&lo| u32::from(lo));
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// CRC-32C (Castagnoli), bitwise: only a few dozen bytes are ever summed.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use etherparse::{NetHeaders, PacketHeaders, TransportHeader};

    use super::*;

    fn addrs(sport: u16, dport: u16) -> (SocketAddrV4, SocketAddrV4) {
        (
            SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), sport),
            SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10), dport),
        )
    }

    #[test]
    fn tcp_syn_and_udp_frames_parse_with_valid_checksums() {
        for (protocol, sport, dport) in [
            (Protocol::Tcp, 40000, 30080),
            (Protocol::Udp, 5353, 53),
            (Protocol::Tcp, 1, 65535),
            (Protocol::Udp, 65535, 1),
        ] {
            let (src, dst) = addrs(sport, dport);
            let frame = build_frame(src, dst, protocol);
            let h = PacketHeaders::from_ethernet_slice(&frame).unwrap();
            let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
                panic!("{:?}", h.net)
            };
            assert_eq!(ip.header_checksum, ip.calc_header_checksum());
            assert_eq!(Ipv4Addr::from(ip.source), *src.ip());
            assert_eq!(Ipv4Addr::from(ip.destination), *dst.ip());
            assert_eq!(ip.total_len as usize, frame.len() - ETH_HLEN);
            assert!(ip.dont_fragment && !ip.more_fragments);
            assert!(h.payload.slice().is_empty());
            match (&h.transport, protocol) {
                (Some(TransportHeader::Tcp(tcp)), Protocol::Tcp) => {
                    assert!(tcp.syn && !tcp.ack && !tcp.rst && !tcp.fin);
                    assert_eq!((tcp.source_port, tcp.destination_port), (sport, dport));
                    assert_eq!(tcp.checksum, tcp.calc_checksum_ipv4(ip, &[]).unwrap());
                }
                (Some(TransportHeader::Udp(udp)), Protocol::Udp) => {
                    assert_eq!((udp.source_port, udp.destination_port), (sport, dport));
                    assert_eq!(udp.length, 8);
                    assert_eq!(udp.checksum, udp.calc_checksum_ipv4(ip, &[]).unwrap());
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn sctp_init_has_a_valid_crc32c() {
        // RFC 3720 test vector: 32 bytes of zeroes.
        assert_eq!(crc32c(&[0; 32]), 0x8a91_36aa);
        let (src, dst) = addrs(40000, 30080);
        let frame = build_frame(src, dst, Protocol::Sctp);
        let l4 = &frame[ETH_HLEN + IPV4_HLEN..];
        assert_eq!(l4.len(), 32);
        assert_eq!(frame[ETH_HLEN + 9], 132);
        let mut zeroed = l4.to_vec();
        zeroed[8..12].fill(0);
        assert_eq!(l4[8..12], crc32c(&zeroed).to_le_bytes());
        assert_eq!(internet_checksum(&[&frame[ETH_HLEN..ETH_HLEN + 20]]), 0);
    }

    #[test]
    fn checksum_of_odd_length_pads_with_zero() {
        assert_eq!(internet_checksum(&[&[0x12, 0x34, 0x56]]), !0x6834);
    }
}
