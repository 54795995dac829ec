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
use etherparse::{IpNumber, PacketBuilder};
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
        self.run(frame, TRACE_ENTRY_EXTERNAL, (0, 0), |dp, frame| {
            dp.run_xdp(frame)
        })
    }

    /// Traces what the socket hooks decide for a socket with `cookie`
    /// calling connect()/sendmsg() to `frame`'s destination (address, port
    /// and protocol): `lb_trace_socket`. A translated frame comes back with
    /// the backend as its destination.
    pub fn trace_socket(&self, frame: &[u8], cookie: u64) -> Result<TraceOutcome> {
        self.trace_socket_in(frame, cookie, 0)
    }

    /// [`Tracer::trace_socket`] for a socket in the network namespace with
    /// `netns_cookie` (as `lb affinity list` shows it): session affinity
    /// is looked up for that client (0: a namespace with no entry).
    pub fn trace_socket_in(
        &self,
        frame: &[u8],
        cookie: u64,
        netns_cookie: u64,
    ) -> Result<TraceOutcome> {
        self.run(
            frame,
            TRACE_ENTRY_SOCKET,
            (cookie, netns_cookie),
            |dp, frame| dp.run_trace_socket(frame),
        )
    }

    fn run(
        &self,
        frame: &[u8],
        entry: u8,
        (cookie, netns_cookie): (u64, u64),
        test_run: impl FnOnce(&Datapath, &[u8]) -> Result<(u32, Vec<u8>)>,
    ) -> Result<TraceOutcome> {
        let mut guard = self.trace.lock().unwrap_or_else(PoisonError::into_inner);
        let (record, request) = &mut *guard;
        let req = TraceRequest {
            cookie,
            entry,
            _pad: [0; 7],
            netns_cookie,
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

/// TTL of crafted frames.
const FRAME_TTL: u8 = 64;
/// Initial sequence number (TCP), initiate tag and initial TSN (SCTP).
const FRAME_ISN: u32 = 0x1000_0000;
/// TCP window of the SYN.
const FRAME_TCP_WINDOW: u16 = 64240;

/// Crafts the first packet of a flow from `src` to `dst`, with valid
/// checksums: Ethernet + IPv4 (DF, TTL 64) + a TCP SYN, an empty UDP
/// datagram, or an SCTP INIT.
pub fn build_frame(src: SocketAddrV4, dst: SocketAddrV4, protocol: Protocol) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(FRAME_SRC_MAC, FRAME_DST_MAC).ipv4(
        src.ip().octets(),
        dst.ip().octets(),
        FRAME_TTL,
    );
    let mut frame = Vec::with_capacity(64);
    // Writing into a Vec fails only on lengths far beyond these headers.
    match protocol {
        Protocol::Tcp => ip
            .tcp(src.port(), dst.port(), FRAME_ISN, FRAME_TCP_WINDOW)
            .syn()
            .write(&mut frame, &[]),
        Protocol::Udp => ip.udp(src.port(), dst.port()).write(&mut frame, &[]),
        // etherparse has no SCTP layer: the INIT goes as the IPv4 payload.
        Protocol::Sctp => ip.write(&mut frame, IpNumber::SCTP, &sctp_init(src, dst)),
    }
    .expect("a frame of fixed, small headers");
    frame
}

/// An SCTP INIT packet (common header and chunk) with its CRC32c.
fn sctp_init(src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    let mut sctp = Vec::with_capacity(32);
    sctp.extend_from_slice(&src.port().to_be_bytes());
    sctp.extend_from_slice(&dst.port().to_be_bytes());
    sctp.extend_from_slice(&[0; 8]); // verification tag 0 (INIT), checksum
    sctp.extend_from_slice(&[1, 0, 0, 20]); // INIT chunk, 20 bytes
    sctp.extend_from_slice(&FRAME_ISN.to_be_bytes()); // initiate tag
    sctp.extend_from_slice(&65535u32.to_be_bytes()); // a_rwnd
    sctp.extend_from_slice(&[0, 1, 0, 1]); // outbound, inbound streams
    sctp.extend_from_slice(&FRAME_ISN.to_be_bytes()); // initial TSN
    // CRC32c, stored little-endian (RFC 9260, appendix A).
    let crc = lb_common::sctp::crc32c(&sctp);
    sctp[8..12].copy_from_slice(&crc.to_le_bytes());
    sctp
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
            assert_eq!(ip.total_len as usize, frame.len() - 14);
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
        use lb_common::sctp::crc32c;
        let (src, dst) = addrs(40000, 30080);
        let frame = build_frame(src, dst, Protocol::Sctp);
        let h = PacketHeaders::from_ethernet_slice(&frame).unwrap();
        let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
            panic!("{:?}", h.net)
        };
        assert_eq!(ip.protocol, IpNumber::SCTP);
        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
        assert!(ip.dont_fragment && ip.time_to_live == 64);
        let l4 = h.payload.slice();
        assert_eq!(l4.len(), 32);
        assert_eq!(l4[..4], [0x9c, 0x40, 0x75, 0x80]);
        let mut zeroed = l4.to_vec();
        zeroed[8..12].fill(0);
        assert_eq!(l4[8..12], crc32c(&zeroed).to_le_bytes());
    }

    /// The frames the hand-written builder made before etherparse did:
    /// kernel tests and traces depend on TTL, DF, flags, ISN and window.
    #[test]
    fn frames_are_byte_for_byte_the_ones_lb_always_built() {
        let golden = [
            (
                Protocol::Tcp,
                "0200000000020200000000010800450000280000400040064e8bc6336407c000020a\
                 9c40758010000000000000005002faf0a6eb0000",
            ),
            (
                Protocol::Udp,
                "02000000000202000000000108004500001c0000400040114e8cc6336407c000020a\
                 9c407580000801d8",
            ),
            (
                Protocol::Sctp,
                "0200000000020200000000010800450000340000400040844e01c6336407c000020a\
                 9c4075800000000040d15a4601000014100000000000ffff0001000110000000",
            ),
        ];
        let (src, dst) = addrs(40000, 30080);
        for (protocol, hex) in golden {
            let frame = build_frame(src, dst, protocol);
            let frame: String = frame.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(frame, hex, "{protocol:?}");
        }
    }
}
