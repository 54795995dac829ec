//! The bench's own traffic generator: a tiny XDP program, assembled with
//! `bpf_asm` and loaded with bpf(2) (`raw_bpf`), run with
//! `BPF_PROG_TEST_RUN` in live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`)
//! from a thread inside the client's namespace. Every frame it returns
//! `XDP_TX`, which the kernel turns into a transmit out of the client's
//! veth, so the frames reach the node's `ext0` as a NIC's would.
//!
//! The kernel recycles the frames' pages, and whatever handled a frame
//! before (a NAT rewriting its destination, say) may have left its mark:
//! so the program writes the whole header on every frame, then the
//! per-frame fields from `bpf_get_prandom_u32` (source address and port,
//! destination among the pods), and the IPv4 checksum over them. UDP goes
//! with checksum 0 (none), which IPv4 allows.

use std::{
    fs,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    bpf_asm::{Alu, Asm, Cond, Insn, R0, R1, R2, R3, R4, R6, R7, R8, R9, Size},
    raw_bpf::{self, BPF_PROG_TEST_RUN, Hook, RawProgram},
};

/// Ethernet + IPv4 + UDP.
pub const HEADER_LEN: usize = 14 + 20 + 8;
/// UDP payload bytes: the frame is the Ethernet minimum (60 bytes).
pub const PAYLOAD_LEN: usize = 18;

const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
const XDP_ABORTED: i32 = 0;
const XDP_TX: i32 = 3;
const HELPER_GET_PRANDOM_U32: i32 = 7;
/// Frames per test run: short enough that a run's length stays close to
/// the time asked for.
const FRAMES_PER_RUN: u32 = 1 << 13;

/// Which frames to make: every field not spread is fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// Source address: `src_base + ((random >> 16) & src_mask)`.
    pub src_base: Ipv4Addr,
    pub src_mask: u32,
    /// Source port: `sport_base | (random & sport_mask)`.
    pub sport_base: u16,
    pub sport_mask: u16,
    /// Destination address: `dst_base + (random >> 8) % dst_count`.
    pub dst_base: Ipv4Addr,
    pub dst_count: u32,
    pub dport: u16,
}

impl FrameSpec {
    /// The frame's fixed bytes; the program writes the header part of
    /// them over every frame, then the per-frame fields.
    pub fn template(&self) -> Vec<u8> {
        let mut frame = vec![0u8; HEADER_LEN + PAYLOAD_LEN];
        frame[0..6].copy_from_slice(&self.dst_mac);
        frame[6..12].copy_from_slice(&self.src_mac);
        frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut frame[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + 8 + PAYLOAD_LEN) as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        let udp = &mut frame[34..42];
        udp[2..4].copy_from_slice(&self.dport.to_be_bytes());
        udp[4..6].copy_from_slice(&((8 + PAYLOAD_LEN) as u16).to_be_bytes());
        frame
    }

    /// What the program writes for the draw `random` (the model its
    /// instructions implement; the unit tests check it against an
    /// independent parser).
    pub fn frame_for(&self, random: u32) -> Vec<u8> {
        let mut frame = self.template();
        let (src, dst, sport) = self.fields(random);
        frame[26..30].copy_from_slice(&src.to_be_bytes());
        frame[30..34].copy_from_slice(&dst.to_be_bytes());
        frame[34..36].copy_from_slice(&sport.to_be_bytes());
        let sum = self.fixed_sum() + (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff);
        frame[24..26].copy_from_slice(&(!fold(sum) as u16).to_be_bytes());
        frame
    }

    fn fields(&self, random: u32) -> (u32, u32, u16) {
        let src = u32::from(self.src_base).wrapping_add((random >> 16) & self.src_mask);
        let dst = u32::from(self.dst_base).wrapping_add((random >> 8) % self.dst_count.max(1));
        let sport = self.sport_base | (random as u16 & self.sport_mask);
        (src, dst, sport)
    }

    /// The IPv4 header's 16-bit words summed, without the checksum and
    /// the addresses (they vary per frame).
    fn fixed_sum(&self) -> u32 {
        let frame = self.template();
        frame[14..26]
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum()
    }

    /// The generator's instructions.
    pub fn program(&self) -> Vec<Insn> {
        let template = self.template();
        let mut asm = Asm::new();
        let abort = asm.new_label();
        asm.mov_reg(R6, R1)
            .call(HELPER_GET_PRANDOM_U32)
            .mov_reg(R7, R0)
            .ldx(Size::W, R2, R6, 0) // ctx->data
            .ldx(Size::W, R3, R6, 4) // ctx->data_end
            .mov_reg(R4, R2)
            .alu(Alu::Add, R4, HEADER_LEN as i32)
            // if data + HEADER_LEN > data_end: abort.
            .jmp_reg(Cond::Gt, R4, R3, abort);
        for (i, word) in template[..40].chunks(4).enumerate() {
            let imm = i32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            asm.st(Size::W, R2, (i * 4) as i16, imm);
        }
        let last = i32::from(u16::from_le_bytes([template[40], template[41]]));
        asm.st(Size::H, R2, 40, last)
            .alu32(Alu::Mov, R9, self.fixed_sum() as i32);
        // Source address (r8), into the sum and the frame.
        asm.alu32_reg(Alu::Mov, R8, R7)
            .alu32(Alu::Rsh, R8, 16)
            .alu32(Alu::And, R8, self.src_mask as i32)
            .alu32(Alu::Add, R8, u32::from(self.src_base) as i32);
        add_halves_to_sum(&mut asm);
        asm.to_be(R8, 32).stx(Size::W, R2, 26, R8);
        // Destination address.
        asm.alu32_reg(Alu::Mov, R8, R7)
            .alu32(Alu::Rsh, R8, 8)
            .alu32(Alu::Mod, R8, self.dst_count.max(1) as i32)
            .alu32(Alu::Add, R8, u32::from(self.dst_base) as i32);
        add_halves_to_sum(&mut asm);
        asm.to_be(R8, 32).stx(Size::W, R2, 30, R8);
        // Source port.
        asm.alu32_reg(Alu::Mov, R8, R7)
            .alu32(Alu::And, R8, i32::from(self.sport_mask))
            .alu32(Alu::Or, R8, i32::from(self.sport_base))
            .to_be(R8, 16)
            .stx(Size::H, R2, 34, R8);
        // Fold twice, complement, store.
        for _ in 0..2 {
            asm.alu32_reg(Alu::Mov, R1, R9)
                .alu32(Alu::Rsh, R1, 16)
                .alu32(Alu::And, R9, 0xffff)
                .alu32_reg(Alu::Add, R9, R1);
        }
        asm.alu32(Alu::Xor, R9, 0xffff)
            .to_be(R9, 16)
            .stx(Size::H, R2, 24, R9)
            .alu(Alu::Mov, R0, XDP_TX)
            .exit()
            .label(abort)
            .alu(Alu::Mov, R0, XDP_ABORTED)
            .exit();
        asm.finish().expect("the generator's jumps resolve")
    }
}

/// Adds r8's two 16-bit halves to the sum in r9.
fn add_halves_to_sum(asm: &mut Asm) {
    asm.alu32_reg(Alu::Mov, R1, R8)
        .alu32(Alu::Rsh, R1, 16)
        .alu32_reg(Alu::Add, R9, R1)
        .alu32_reg(Alu::Mov, R1, R8)
        .alu32(Alu::And, R1, 0xffff)
        .alu32_reg(Alu::Add, R9, R1);
}

fn fold(mut sum: u32) -> u32 {
    for _ in 0..2 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum & 0xffff
}

/// The loaded generator for one frame spec.
pub struct Generator {
    prog: RawProgram,
    frame: Vec<u8>,
}

/// What one run sent.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub frames: u64,
    pub elapsed: Duration,
}

impl Sent {
    pub fn rate(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64()
    }
}

impl Generator {
    pub fn load(spec: &FrameSpec) -> Result<Generator> {
        let prog = RawProgram::load(Hook::Xdp, "lb_bench_gen", &spec.program())
            .context("loading the live-frames generator")?;
        Ok(Generator {
            prog,
            frame: spec.template(),
        })
    }

    /// Sends frames out of `dev` in the namespace at `netns` for about
    /// `length`, from a thread that enters the namespace (the frames'
    /// ingress device is looked up in the caller's namespace).
    pub fn run(&self, netns: &Path, dev: &str, length: Duration) -> Result<Sent> {
        let netns =
            fs::File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
        let dev = std::ffi::CString::new(dev)?;
        thread::scope(|scope| {
            scope
                .spawn(|| -> Result<Sent> {
                    // SAFETY: plain syscalls on a valid fd and a C string.
                    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        bail!("setns: {}", std::io::Error::last_os_error());
                    }
                    // SAFETY: as above.
                    let ifindex = unsafe { libc::if_nametoindex(dev.as_ptr()) };
                    if ifindex == 0 {
                        bail!("no device {dev:?} in the client's namespace");
                    }
                    self.send_for(ifindex, length)
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?
        })
    }

    fn send_for(&self, ifindex: u32, length: Duration) -> Result<Sent> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let mut ctx = [0u32; 6];
        ctx[1] = self.frame.len() as u32;
        ctx[3] = ifindex;
        let start = Instant::now();
        let mut frames = 0u64;
        while start.elapsed() < length {
            let mut attr = [0u8; 128];
            attr[0..4].copy_from_slice(&(self.prog.raw_fd() as u32).to_ne_bytes());
            attr[8..12].copy_from_slice(&(self.frame.len() as u32).to_ne_bytes());
            attr[16..24].copy_from_slice(&(self.frame.as_ptr() as u64).to_ne_bytes());
            attr[32..36].copy_from_slice(&FRAMES_PER_RUN.to_ne_bytes());
            attr[40..44].copy_from_slice(&(size_of_val(&ctx) as u32).to_ne_bytes());
            attr[48..56].copy_from_slice(&(ctx.as_ptr() as u64).to_ne_bytes());
            attr[64..68].copy_from_slice(&BPF_F_TEST_XDP_LIVE_FRAMES.to_ne_bytes());
            raw_bpf::syscall(BPF_PROG_TEST_RUN, &mut attr).context(
                "a live-frames test run (needs root and a kernel with BPF_F_TEST_XDP_LIVE_FRAMES, 5.18+)",
            )?;
            frames += u64::from(FRAMES_PER_RUN);
        }
        Ok(Sent {
            frames,
            elapsed: start.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    use super::*;

    fn spec() -> FrameSpec {
        FrameSpec {
            src_mac: [2, 0, 0, 0, 0, 2],
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_base: Ipv4Addr::new(10, 128, 0, 0),
            src_mask: 0xffff,
            sport_base: 0x8000,
            sport_mask: 0x7fff,
            dst_base: Ipv4Addr::new(203, 0, 113, 11),
            dst_count: 3,
            dport: 5353,
        }
    }

    /// The frames the program's arithmetic makes parse as valid UDP over
    /// IPv4 with a correct header checksum (etherparse recomputes it).
    #[test]
    fn frames_are_valid_udp_with_a_correct_ip_checksum() {
        for random in [0u32, 1, 0xffff_ffff, 0x1234_5678, 0xdead_beef, 0x8000_0001] {
            let frame = spec().frame_for(random);
            let packet = SlicedPacket::from_ethernet(&frame).expect("parses");
            let Some(NetSlice::Ipv4(ip)) = packet.net else {
                panic!("not IPv4")
            };
            let header = ip.header().to_header();
            assert_eq!(header.header_checksum, header.calc_header_checksum());
            let Some(TransportSlice::Udp(udp)) = packet.transport else {
                panic!("not UDP")
            };
            assert_eq!(udp.destination_port(), 5353);
            assert_eq!(udp.checksum(), 0);
            assert!(udp.source_port() >= 0x8000);
            let dst =
                u32::from_be_bytes(header.destination) - u32::from(Ipv4Addr::new(203, 0, 113, 11));
            assert!(dst < 3, "destination among the three pods");
            assert_eq!(frame.len(), 60);
        }
    }

    /// A fixed flow set: the mask bounds the distinct 5-tuples.
    #[test]
    fn established_spec_draws_few_tuples() {
        let spec = FrameSpec {
            src_mask: 0,
            sport_mask: 63,
            dst_count: 1,
            ..spec()
        };
        let tuples: std::collections::HashSet<Vec<u8>> = (0..10_000u32)
            .map(|r| spec.frame_for(r.wrapping_mul(2_654_435_761))[26..36].to_vec())
            .collect();
        assert_eq!(tuples.len(), 64);
    }

    /// The bounds check jumps to the abort exit, and every path ends in
    /// exit (the verifier rejects anything else; this catches an encoder
    /// slip before a privileged run would).
    #[test]
    fn program_jumps_land_on_its_abort_exit() {
        let program = spec().program();
        let (at, jump) = program
            .iter()
            .enumerate()
            .find(|(_, i)| i.code == 0x2d)
            .expect("a bounds check");
        let target = at + 1 + jump.off as usize;
        const MOV64_IMM: u8 = 0xb7;
        const EXIT: u8 = 0x95;
        assert_eq!(
            (
                program[target].code,
                program[target].dst,
                program[target].imm
            ),
            (MOV64_IMM, 0, XDP_ABORTED)
        );
        assert_eq!(program[target + 1].code, EXIT);
        assert_eq!(program.last().map(|i| i.code), Some(EXIT));
        assert_eq!(program[target - 1].code, EXIT);
    }
}
