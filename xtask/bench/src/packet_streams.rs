//! One measured stream of the per-packet section: a program, the frames it
//! is fed (repeat 1, a fresh frame per call), what every output must be,
//! and the agent counter that must rise by one per call. A batch of calls
//! gives one sample, the mean of the kernel's durations; a stream whose
//! proof fails once keeps no sample at all.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
};

use anyhow::{Result, bail};
use lb::datapath::{KernelMaps, LiveProgram, TestRunOutcome};
use lb_common::reason::Reason;

use crate::{frames, raw_bpf::RawProgram};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
/// What lb's tc egress program returns for what it lets through (tcx:
/// the next program, else pass).
pub const TCX_NEXT: i32 = -1;
/// The subject of lb's own streams.
pub const LB: &str = "lb";

/// The program a stream runs.
#[derive(Clone, Copy)]
pub enum Program<'a> {
    /// One the agent loaded and attached, over its live maps.
    Agent(&'a LiveProgram),
    /// One of the bench's own (the floor, the limit).
    Bench(&'a RawProgram),
}

impl Program<'_> {
    fn run(&self, frame: &[u8]) -> Result<TestRunOutcome> {
        match self {
            Program::Agent(prog) => prog.test_run(frame, 1),
            Program::Bench(prog) => prog.test_run(frame),
        }
    }
}

/// Where a stream's frames come from.
pub enum Frames {
    /// A new client 5-tuple every call (the `k`-th of [`frames::client`]),
    /// TCP SYNs to `to`.
    NewFlows { next: u64, to: SocketAddrV4 },
    /// The same frame every call (a known flow's).
    Same(Vec<u8>),
}

impl Frames {
    fn next(&mut self) -> Vec<u8> {
        match self {
            Frames::NewFlows { next, to } => {
                *next += 1;
                frames::tcp(frames::client(*next - 1), *to, true)
            }
            Frames::Same(frame) => frame.clone(),
        }
    }
}

/// What every output of a stream must be.
pub enum Expect {
    /// This verdict (XDP_PASS, or tc's TCX_NEXT as a u32), the frame
    /// untouched.
    Unchanged { verdict: u32 },
    /// XDP_PASS, the destination one of `to`, the source kept, checksums
    /// valid.
    Dnat { to: Vec<SocketAddrV4> },
    /// tc lets it through with `from` as its source, the destination kept,
    /// checksums valid.
    ReverseNat { from: SocketAddrV4 },
    /// XDP_PASS, the destination one of `to`, the source `node` and a port
    /// of the SNAT range, checksums valid (masquerade).
    Masquerade {
        to: Vec<SocketAddrV4>,
        node: Ipv4Addr,
    },
    /// XDP_TX of an ICMP port unreachable to the sender, or, once this
    /// CPU's reject budget is spent (the kernel's icmp_msgs_burst, then
    /// icmp_msgs_per_sec), XDP_DROP: a stream of rejects measures mostly
    /// the over-the-limit path, which is what a flood of them costs.
    Reject,
}

impl Expect {
    /// Checks one output; returns the destination a DNAT chose.
    fn check(&self, input: &[u8], out: &TestRunOutcome) -> Result<Option<Ipv4Addr>> {
        let sent = frames::parse_checked(input)?;
        let verdict = out.return_value;
        match self {
            Expect::Unchanged { verdict: want } => {
                if verdict != *want || out.packet_out != input {
                    bail!("verdict {verdict} (expected {want}) or the frame was changed");
                }
                Ok(None)
            }
            Expect::Dnat { to } => {
                let seen = frames::parse_checked(&out.packet_out)?;
                if verdict != XDP_PASS || seen.src != sent.src || !to.contains(&seen.dst) {
                    bail!(
                        "verdict {verdict}, {} -> {}: expected XDP_PASS, {} -> one of {to:?}",
                        seen.src,
                        seen.dst,
                        sent.src
                    );
                }
                Ok(Some(*seen.dst.ip()))
            }
            Expect::Masquerade { to, node } => {
                let seen = frames::parse_checked(&out.packet_out)?;
                let snat_ports = lb_common::snat::SNAT_PORT_MIN..=lb_common::snat::SNAT_PORT_MAX;
                if verdict != XDP_PASS
                    || seen.src.ip() != node
                    || !snat_ports.contains(&seen.src.port())
                    || !to.contains(&seen.dst)
                {
                    bail!(
                        "verdict {verdict}, {} -> {}: expected XDP_PASS, {node}:{snat_ports:?} -> one of {to:?}",
                        seen.src,
                        seen.dst
                    );
                }
                Ok(Some(*seen.dst.ip()))
            }
            Expect::ReverseNat { from } => {
                let seen = frames::parse_checked(&out.packet_out)?;
                if out.tc_verdict() != TCX_NEXT || seen.src != *from || seen.dst != sent.dst {
                    bail!(
                        "tc verdict {}, {} -> {}: expected TCX_NEXT, {from} -> {}",
                        out.tc_verdict(),
                        seen.src,
                        seen.dst,
                        sent.dst
                    );
                }
                Ok(None)
            }
            Expect::Reject => {
                if verdict == XDP_DROP {
                    return Ok(None);
                }
                if verdict != XDP_TX {
                    bail!("verdict {verdict}, expected XDP_TX, or XDP_DROP over the rate limit");
                }
                frames::check_port_unreachable(&out.packet_out, *sent.dst.ip(), *sent.src.ip())?;
                Ok(None)
            }
        }
    }
}

/// A measured stream and what it gathered.
pub struct Stream<'a> {
    pub case: &'static str,
    pub subject: &'static str,
    pub program: Program<'a>,
    pub frames: Frames,
    pub expect: Expect,
    /// The agent counters each call must add one to, together.
    pub counters: Vec<Reason>,
    /// One mean per batch, in ns per packet.
    pub samples: Vec<f64>,
    /// Where DNAT sent the packets, by destination address.
    pub chosen: BTreeMap<Ipv4Addr, u64>,
    /// Why the stream's figures are withheld, once its proof failed.
    pub failure: Option<String>,
}

impl<'a> Stream<'a> {
    /// A path of lb, proven by its agent counter too.
    pub fn lb(
        case: &'static str,
        program: Program<'a>,
        frames: Frames,
        expect: Expect,
        counter: Reason,
    ) -> Stream<'a> {
        Stream {
            counters: vec![counter],
            ..Stream::bench(case, LB, program, frames, expect)
        }
    }

    /// Calls may also count `reason` instead of the stream's counter.
    pub fn or_counted(mut self, reason: Reason) -> Stream<'a> {
        self.counters.push(reason);
        self
    }

    /// One of the bench's own programs: no agent counter to prove it by.
    pub fn bench(
        case: &'static str,
        subject: &'static str,
        program: Program<'a>,
        frames: Frames,
        expect: Expect,
    ) -> Stream<'a> {
        Stream {
            case,
            subject,
            program,
            frames,
            expect,
            counters: Vec::new(),
            samples: Vec::new(),
            chosen: BTreeMap::new(),
            failure: None,
        }
    }

    /// One batch of `calls` test runs: one sample, or the failure that
    /// withholds the stream.
    pub fn batch(&mut self, calls: u32, maps: &KernelMaps) {
        if self.failure.is_some() {
            return;
        }
        if let Err(err) = self.try_batch(calls, maps) {
            self.failure = Some(format!("{err:#}"));
            self.samples.clear();
        }
    }

    fn try_batch(&mut self, calls: u32, maps: &KernelMaps) -> Result<()> {
        let before = self.counter_value(maps)?;
        let mut total_ns = 0u128;
        for _ in 0..calls {
            let frame = self.frames.next();
            let out = self.program.run(&frame)?;
            total_ns += out.duration.as_nanos();
            if let Some(dst) = self.expect.check(&frame, &out)? {
                *self.chosen.entry(dst).or_default() += 1;
            }
        }
        if let Some(before) = before {
            let after = self.counter_value(maps)?.unwrap_or_default();
            if after.wrapping_sub(before) != u64::from(calls) {
                let names: Vec<&str> = self.counters.iter().map(|r| r.name()).collect();
                bail!(
                    "the agent's {} counter rose by {} over {calls} packets",
                    names.join(" + "),
                    after.wrapping_sub(before)
                );
            }
        }
        self.samples.push(total_ns as f64 / f64::from(calls));
        Ok(())
    }

    /// The sum of the stream's counters; none when it has none.
    fn counter_value(&self, maps: &KernelMaps) -> Result<Option<u64>> {
        if self.counters.is_empty() {
            return Ok(None);
        }
        let mut sum = 0u64;
        for reason in &self.counters {
            sum = sum.wrapping_add(maps.stat(*reason)?);
        }
        Ok(Some(sum))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn outcome(return_value: u32, packet_out: Vec<u8>) -> TestRunOutcome {
        TestRunOutcome {
            return_value,
            packet_out,
            duration: Duration::from_nanos(60),
        }
    }

    fn addr(last: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, last), port)
    }

    #[test]
    fn new_flows_are_fresh_and_the_same_frame_repeats() {
        let mut new = Frames::NewFlows {
            next: 0,
            to: addr(1, 30080),
        };
        let (a, b) = (new.next(), new.next());
        assert_ne!(a, b);
        assert_eq!(frames::parse_checked(&a).unwrap().src, frames::client(0));
        let mut same = Frames::Same(a.clone());
        assert_eq!((same.next(), same.next()), (a.clone(), a));
    }

    #[test]
    fn dnat_must_reach_a_listed_backend_with_valid_checksums() {
        let (client, frontend) = (addr(2, 1234), addr(1, 30080));
        let pod = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 11), 8080);
        let input = frames::tcp(client, frontend, true);
        let expect = Expect::Dnat { to: vec![pod] };
        let good = frames::tcp(client, pod, true);
        assert_eq!(
            expect
                .check(&input, &outcome(XDP_PASS, good.clone()))
                .unwrap(),
            Some(*pod.ip())
        );
        // Wrong verdict, untranslated, or a stale checksum: all refused.
        assert!(
            expect
                .check(&input, &outcome(XDP_TX, good.clone()))
                .is_err()
        );
        assert!(
            expect
                .check(&input, &outcome(XDP_PASS, input.clone()))
                .is_err()
        );
        let mut stale = input.clone();
        stale[30..34].copy_from_slice(&pod.ip().octets());
        stale[36..38].copy_from_slice(&pod.port().to_be_bytes());
        assert!(expect.check(&input, &outcome(XDP_PASS, stale)).is_err());
    }

    #[test]
    fn unchanged_means_passed_and_untouched() {
        let input = frames::tcp(addr(2, 1234), addr(1, 30081), true);
        let pass = Expect::Unchanged { verdict: XDP_PASS };
        assert!(
            pass.check(&input, &outcome(XDP_PASS, input.clone()))
                .is_ok()
        );
        let mut changed = input.clone();
        changed[0] ^= 1;
        assert!(pass.check(&input, &outcome(XDP_PASS, changed)).is_err());
        assert!(pass.check(&input, &outcome(1, input.clone())).is_err());
    }

    #[test]
    fn reverse_nat_restores_the_frontend_as_source() {
        let (pod, client, frontend) = (
            SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 12), 8080),
            addr(200, 65_100),
            addr(1, 30080),
        );
        let input = frames::tcp(pod, client, false);
        let expect = Expect::ReverseNat { from: frontend };
        let tcx_next = TCX_NEXT as u32;
        let good = frames::tcp(frontend, client, false);
        assert!(
            expect
                .check(&input, &outcome(tcx_next, good.clone()))
                .is_ok()
        );
        assert!(expect.check(&input, &outcome(2, good)).is_err());
        assert!(
            expect
                .check(&input, &outcome(tcx_next, input.clone()))
                .is_err()
        );
    }

    #[test]
    fn a_reject_is_xdp_tx_of_an_icmp_answer() {
        let input = frames::tcp(addr(2, 1234), addr(1, 30090), true);
        assert!(
            Expect::Reject
                .check(&input, &outcome(XDP_TX, input.clone()))
                .is_err()
        );
    }

    #[test]
    fn a_reject_over_the_rate_limit_is_a_drop_and_nothing_else() {
        let input = frames::tcp(addr(2, 1234), addr(1, 30090), true);
        let check = |verdict| Expect::Reject.check(&input, &outcome(verdict, input.clone()));
        assert!(check(XDP_DROP).is_ok());
        assert!(check(XDP_PASS).is_err());
    }
}
