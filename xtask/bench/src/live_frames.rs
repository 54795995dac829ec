//! The bench's own traffic generator: a tiny XDP program, encoded here as
//! raw eBPF instructions and loaded with bpf(2), run with
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
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// Ethernet + IPv4 + UDP.
pub const HEADER_LEN: usize = 14 + 20 + 8;
/// UDP payload bytes: the frame is the Ethernet minimum (60 bytes).
pub const PAYLOAD_LEN: usize = 18;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;
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
        let mut p = vec![
            mov64_reg(6, 1),
            call(HELPER_GET_PRANDOM_U32),
            mov64_reg(7, 0),
            ldx_w(2, 6, 0), // ctx->data
            ldx_w(3, 6, 4), // ctx->data_end
            mov64_reg(4, 2),
            alu64_imm(ADD, 4, HEADER_LEN as i32),
        ];
        let drop_at = p.len();
        p.push(Insn::placeholder());
        for (i, word) in template[..40].chunks(4).enumerate() {
            let imm = i32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            p.push(st(W, 2, (i * 4) as i16, imm));
        }
        let last = i32::from(u16::from_le_bytes([template[40], template[41]]));
        p.push(st(H, 2, 40, last));
        p.push(mov32_imm(9, self.fixed_sum() as i32));
        // Source address (register 8), into the sum and the frame.
        p.extend([
            mov32_reg(8, 7),
            alu32_imm(RSH, 8, 16),
            alu32_imm(AND, 8, self.src_mask as i32),
            alu32_imm(ADD, 8, u32::from(self.src_base) as i32),
        ]);
        p.extend(add_words_to_sum());
        p.extend([to_be(8, 32), stx(W, 2, 8, 26)]);
        // Destination address.
        p.extend([
            mov32_reg(8, 7),
            alu32_imm(RSH, 8, 8),
            alu32_imm(MOD, 8, self.dst_count.max(1) as i32),
            alu32_imm(ADD, 8, u32::from(self.dst_base) as i32),
        ]);
        p.extend(add_words_to_sum());
        p.extend([to_be(8, 32), stx(W, 2, 8, 30)]);
        // Source port.
        p.extend([
            mov32_reg(8, 7),
            alu32_imm(AND, 8, i32::from(self.sport_mask)),
            alu32_imm(OR, 8, i32::from(self.sport_base)),
            to_be(8, 16),
            stx(H, 2, 8, 34),
        ]);
        // Fold twice, complement, store.
        for _ in 0..2 {
            p.extend([
                mov32_reg(1, 9),
                alu32_imm(RSH, 1, 16),
                alu32_imm(AND, 9, 0xffff),
                alu32_reg(ADD, 9, 1),
            ]);
        }
        p.extend([
            alu32_imm(XOR, 9, 0xffff),
            to_be(9, 16),
            stx(H, 2, 9, 24),
            mov64_imm(0, XDP_TX),
            exit(),
        ]);
        let drop_target = p.len();
        p.extend([mov64_imm(0, XDP_ABORTED), exit()]);
        // if data + HEADER_LEN > data_end: abort.
        p[drop_at] = jgt_reg(4, 3, (drop_target - drop_at - 1) as i16);
        p
    }
}

/// Adds register 8's two 16-bit halves to the sum in register 9.
fn add_words_to_sum() -> [Insn; 6] {
    [
        mov32_reg(1, 8),
        alu32_imm(RSH, 1, 16),
        alu32_reg(ADD, 9, 1),
        mov32_reg(1, 8),
        alu32_imm(AND, 1, 0xffff),
        alu32_reg(ADD, 9, 1),
    ]
}

fn fold(mut sum: u32) -> u32 {
    for _ in 0..2 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum & 0xffff
}

/// One eBPF instruction, as the kernel reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// Filled in once the jump's target is known.
    fn placeholder() -> Insn {
        exit()
    }

    fn bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = self.regs;
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

const ADD: u8 = 0x00;
const OR: u8 = 0x40;
const AND: u8 = 0x50;
const RSH: u8 = 0x70;
const MOD: u8 = 0x90;
const XOR: u8 = 0xa0;
const W: u8 = 0x00;
const H: u8 = 0x08;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}
fn mov64_reg(dst: u8, src: u8) -> Insn {
    insn(0xbf, dst, src, 0, 0)
}
fn mov64_imm(dst: u8, imm: i32) -> Insn {
    insn(0xb7, dst, 0, 0, imm)
}
fn mov32_reg(dst: u8, src: u8) -> Insn {
    insn(0xbc, dst, src, 0, 0)
}
fn mov32_imm(dst: u8, imm: i32) -> Insn {
    insn(0xb4, dst, 0, 0, imm)
}
fn alu64_imm(op: u8, dst: u8, imm: i32) -> Insn {
    insn(0x07 | op, dst, 0, 0, imm)
}
fn alu32_imm(op: u8, dst: u8, imm: i32) -> Insn {
    insn(0x04 | op, dst, 0, 0, imm)
}
fn alu32_reg(op: u8, dst: u8, src: u8) -> Insn {
    insn(0x0c | op, dst, src, 0, 0)
}
fn to_be(dst: u8, bits: i32) -> Insn {
    insn(0xdc, dst, 0, 0, bits)
}
fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x61, dst, src, off, 0)
}
fn st(size: u8, dst: u8, off: i16, imm: i32) -> Insn {
    insn(0x62 | size, dst, 0, off, imm)
}
fn stx(size: u8, dst: u8, src: u8, off: i16) -> Insn {
    insn(0x63 | size, dst, src, off, 0)
}
fn jgt_reg(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x2d, dst, src, off, 0)
}
fn call(helper: i32) -> Insn {
    insn(0x85, 0, 0, 0, helper)
}
fn exit() -> Insn {
    insn(0x95, 0, 0, 0, 0)
}

/// The loaded generator for one frame spec.
pub struct Generator {
    prog: OwnedFd,
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
        let code: Vec<u8> = spec.program().iter().flat_map(Insn::bytes).collect();
        let license = c"GPL";
        let mut log = vec![0u8; 64 * 1024];
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&BPF_PROG_TYPE_XDP.to_ne_bytes());
        attr[4..8].copy_from_slice(&((code.len() / 8) as u32).to_ne_bytes());
        attr[8..16].copy_from_slice(&(code.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        attr[24..28].copy_from_slice(&1u32.to_ne_bytes()); // log_level
        attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
        attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
        let prog = bpf(BPF_PROG_LOAD, &mut attr).with_context(|| {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            format!(
                "loading the live-frames generator (verifier: {})",
                String::from_utf8_lossy(&log[..end]).trim()
            )
        })?;
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
            attr[0..4].copy_from_slice(&(self.prog.as_raw_fd() as u32).to_ne_bytes());
            attr[8..12].copy_from_slice(&(self.frame.len() as u32).to_ne_bytes());
            attr[16..24].copy_from_slice(&(self.frame.as_ptr() as u64).to_ne_bytes());
            attr[32..36].copy_from_slice(&FRAMES_PER_RUN.to_ne_bytes());
            attr[40..44].copy_from_slice(&(size_of_val(&ctx) as u32).to_ne_bytes());
            attr[48..56].copy_from_slice(&(ctx.as_ptr() as u64).to_ne_bytes());
            attr[64..68].copy_from_slice(&BPF_F_TEST_XDP_LIVE_FRAMES.to_ne_bytes());
            bpf_call(BPF_PROG_TEST_RUN, &mut attr).context(
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

/// bpf(2) for a command that returns a new fd.
fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> Result<OwnedFd> {
    let fd = bpf_call(cmd, attr)?;
    // SAFETY: a new fd the kernel just returned to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn bpf_call(cmd: libc::c_long, attr: &mut [u8; 128]) -> Result<libc::c_long> {
    // SAFETY: bpf(2) reads and writes `attr` (zero-filled beyond the
    // fields set), and the pointers in it outlive the call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if ret < 0 {
        bail!("bpf({cmd}): {}", std::io::Error::last_os_error());
    }
    Ok(ret)
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
        assert_eq!(program[target], mov64_imm(0, XDP_ABORTED));
        assert_eq!(program[target + 1], exit());
        assert_eq!(program.last(), Some(&exit()));
        assert_eq!(program[target - 1], exit());
    }
}
