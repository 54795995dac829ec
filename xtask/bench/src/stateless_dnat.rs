//! The limit: the least an XDP program can do and still be a Service load
//! balancer's data path. Parse Ethernet / IPv4 / TCP or UDP, match one
//! frontend address:port, rewrite the destination to one backend with
//! incremental IPv4 and L4 checksum updates, XDP_PASS. No maps, no state,
//! no choice of backend: whatever lb costs above this buys its features.
//!
//! Its redirecting variant (the ceiling, issue "Fast at every scale") also
//! writes the backend's MAC and the egress device's own, and redirects the
//! frame to that device (`bpf_redirect`): no forwarding path, no bridge,
//! no neighbour lookup, all of it known in advance for one backend.
//!
//! The checksum deltas are constant (one frontend, one backend), so they
//! are computed here and embedded as immediates: the program runs straight
//! through, with only the bounds check and the matches branching.
//!
//! Byte order: the program loads and stores packet words as the CPU reads
//! them (little-endian), and so the matches and deltas here are computed on
//! little-endian views of the network-order bytes. A one's-complement sum
//! is the same in either byte order (RFC 1071, 2.B), so the checksums come
//! out right.

use std::net::SocketAddrV4;

use anyhow::{Context, Result, bail};

use crate::{
    bpf_asm::{Alu, Asm, Cond, Insn, R0, R1, R2, R3, R4, R5, R6, Size},
    frames,
    raw_bpf::{Hook, RawProgram},
};

const _: () = assert!(cfg!(target_endian = "little"));

const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;
const BPF_FUNC_REDIRECT: i32 = 23;
const ETH_HLEN: i16 = 14;
const IP: i16 = ETH_HLEN;
const L4: i16 = IP + 20;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;

/// One frontend, one backend, one protocol.
#[derive(Clone, Copy, Debug)]
pub struct StatelessDnat {
    pub tcp: bool,
    pub frontend: SocketAddrV4,
    pub backend: SocketAddrV4,
    /// Redirect translated frames instead of passing them to the stack.
    pub redirect: Option<RedirectTo>,
}

/// Where the redirecting variant sends a translated frame: the egress
/// device (its index in the node's namespace) and the MACs the frame
/// leaves with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedirectTo {
    pub ifindex: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

/// `a + b` in one's complement, for `a, b <= 0xffff`.
fn ones_add(a: u32, b: u32) -> u32 {
    let sum = a + b;
    (sum & 0xffff) + (sum >> 16)
}

/// The little-endian 16-bit words of `bytes` (an even number of them).
fn words(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    let (pairs, _) = bytes.as_chunks::<2>();
    pairs.iter().map(|&w| u32::from(u16::from_le_bytes(w)))
}

/// What a checksum over `old` must have added when `old` becomes `new`
/// (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')): the `~m + m'` part.
pub fn checksum_delta(old: &[u8], new: &[u8]) -> u16 {
    let removed = words(old).fold(0, |sum, w| ones_add(sum, !w & 0xffff));
    words(new).fold(removed, ones_add) as u16
}

/// The checksum `checksum` (a little-endian view) after adding `delta`,
/// as the program computes it.
pub fn apply_delta(checksum: u16, delta: u16) -> u16 {
    !(ones_add(u32::from(!checksum), u32::from(delta)) as u16)
}

fn le32(bytes: [u8; 4]) -> u32 {
    u32::from_le_bytes(bytes)
}

fn le16(bytes: [u8; 2]) -> u32 {
    u32::from(u16::from_le_bytes(bytes))
}

impl StatelessDnat {
    /// The L4 checksum's offset in the frame, and the bytes the program
    /// must be able to read.
    fn l4_checksum(&self) -> (i16, i16) {
        if self.tcp {
            (L4 + 16, L4 + 18)
        } else {
            (L4 + 6, L4 + 8)
        }
    }

    fn ip_delta(&self) -> u16 {
        checksum_delta(&self.frontend.ip().octets(), &self.backend.ip().octets())
    }

    /// The pseudo-header's destination and the destination port change.
    fn l4_delta(&self) -> u16 {
        let mut old = self.frontend.ip().octets().to_vec();
        old.extend(self.frontend.port().to_be_bytes());
        let mut new = self.backend.ip().octets().to_vec();
        new.extend(self.backend.port().to_be_bytes());
        checksum_delta(&old, &new)
    }

    /// The program's instructions.
    pub fn program(&self) -> Vec<Insn> {
        let (csum_at, min_len) = self.l4_checksum();
        let proto = if self.tcp { IPPROTO_TCP } else { IPPROTO_UDP };
        let mut asm = Asm::new();
        let pass = asm.new_label();
        // r2 = data, r3 = data_end; everything read must lie before data_end.
        asm.ldx(Size::W, R2, R1, 0)
            .ldx(Size::W, R3, R1, 4)
            .mov_reg(R4, R2)
            .alu(Alu::Add, R4, min_len.into())
            .jmp_reg(Cond::Gt, R4, R3, pass);
        // EtherType IPv4, a 20-byte header, the protocol, not a non-first
        // fragment (offset bits), the frontend's address and port.
        let matches: [(Size, i16, u32, Option<i32>); 6] = [
            (Size::H, 12, le16([0x08, 0x00]), None),
            (Size::B, IP, 0x45, None),
            (Size::B, IP + 9, proto, None),
            (Size::H, IP + 6, 0, Some(le16([0x1f, 0xff]) as i32)),
            (Size::W, IP + 16, le32(self.frontend.ip().octets()), None),
            (
                Size::H,
                L4 + 2,
                le16(self.frontend.port().to_be_bytes()),
                None,
            ),
        ];
        for (size, at, want, mask) in matches {
            asm.ldx(size, R5, R2, at);
            if let Some(mask) = mask {
                asm.alu(Alu::And, R5, mask);
            }
            asm.jmp32_imm(Cond::Ne, R5, want, pass);
        }
        // Rewrite the destination.
        asm.st(
            Size::W,
            R2,
            IP + 16,
            le32(self.backend.ip().octets()) as i32,
        )
        .st(
            Size::H,
            R2,
            L4 + 2,
            le16(self.backend.port().to_be_bytes()) as i32,
        );
        update_checksum(&mut asm, IP + 10, self.ip_delta(), false, pass);
        // A UDP datagram without checksum skips only the L4 update.
        let l4_done = asm.new_label();
        update_checksum(&mut asm, csum_at, self.l4_delta(), !self.tcp, l4_done);
        asm.label(l4_done);
        if let Some(to) = self.redirect {
            store_mac(&mut asm, 0, to.dst_mac);
            store_mac(&mut asm, 6, to.src_mac);
            asm.alu(Alu::Mov, R1, to.ifindex as i32)
                .alu(Alu::Mov, R2, 0)
                .call(BPF_FUNC_REDIRECT)
                .exit();
        }
        asm.label(pass).alu(Alu::Mov, R0, XDP_PASS as i32).exit();
        asm.finish().expect("the program's labels are all placed")
    }

    /// Loads the program (XDP, plain bpf(2)).
    pub fn load(&self) -> Result<RawProgram> {
        RawProgram::load(Hook::Xdp, "bench_dnat", &self.program())
            .context("loading the stateless DNAT program")
    }
}

/// Six bytes at `at` of the frame (r2), as two immediate stores.
fn store_mac(asm: &mut Asm, at: i16, mac: [u8; 6]) {
    asm.st(
        Size::W,
        R2,
        at,
        le32([mac[0], mac[1], mac[2], mac[3]]) as i32,
    )
    .st(Size::H, R2, at + 4, le16([mac[4], mac[5]]) as i32);
}

/// The verdict a translated frame gets.
fn translated_verdict(dnat: &StatelessDnat) -> u32 {
    if dnat.redirect.is_some() {
        XDP_REDIRECT
    } else {
        XDP_PASS
    }
}

/// `csum = ~(~csum + delta)` at `at`, folded once (two 16-bit values carry
/// at most once). `udp`: a checksum of 0 means none and stays 0, and a
/// computed 0 is sent as 0xffff (RFC 768).
fn update_checksum(asm: &mut Asm, at: i16, delta: u16, udp: bool, pass: crate::bpf_asm::Label) {
    asm.ldx(Size::H, R5, R2, at);
    if udp {
        asm.jmp32_imm(Cond::Eq, R5, 0, pass);
    }
    asm.alu(Alu::Xor, R5, 0xffff)
        .alu(Alu::Add, R5, delta.into())
        .mov_reg(R6, R5)
        .alu(Alu::Rsh, R6, 16)
        .alu(Alu::And, R5, 0xffff)
        .add_reg(R5, R6)
        .alu(Alu::Xor, R5, 0xffff);
    if udp {
        let store = asm.new_label();
        asm.jmp32_imm(Cond::Ne, R5, 0, store)
            .alu(Alu::Mov, R5, 0xffff)
            .label(store);
    }
    asm.stx(Size::H, R2, at, R5);
}

/// Proves the loaded program right before it is measured: on crafted
/// frames from many clients, a frontend-bound packet comes out XDP_PASS
/// (the redirecting variant: XDP_REDIRECT with its MACs) with the backend
/// as destination, the source untouched and valid checksums; anything else
/// comes out XDP_PASS unchanged.
pub fn check(dnat: &StatelessDnat, prog: &RawProgram) -> Result<()> {
    let other_port = SocketAddrV4::new(*dnat.frontend.ip(), dnat.frontend.port() ^ 1);
    for k in 0..256 {
        let client = frames::client(k * 7919);
        let frame = frame_to(dnat.tcp, client, dnat.frontend, k);
        let out = prog.test_run(&frame)?;
        let verdict = translated_verdict(dnat);
        if out.return_value != verdict {
            bail!(
                "verdict {} for a frontend packet, expected {verdict}",
                out.return_value
            );
        }
        if let Some(to) = dnat.redirect
            && (out.packet_out[..6] != to.dst_mac || out.packet_out[6..12] != to.src_mac)
        {
            bail!("a redirected frame left without the backend's and the device's MACs");
        }
        let seen = frames::parse_checked(&out.packet_out)
            .with_context(|| format!("the rewritten packet from {client}"))?;
        if (seen.src, seen.dst, out.packet_out.len()) != (client, dnat.backend, frame.len()) {
            bail!(
                "{client} -> {} came out as {} -> {} ({} bytes), expected {client} -> {}",
                dnat.frontend,
                seen.src,
                seen.dst,
                out.packet_out.len(),
                dnat.backend
            );
        }
        for untouched in [
            frame_to(dnat.tcp, client, other_port, k),
            frame_to(!dnat.tcp, client, dnat.frontend, k),
        ] {
            let out = prog.test_run(&untouched)?;
            if out.return_value != XDP_PASS || out.packet_out != untouched {
                bail!("a packet for no frontend was changed (or not passed)");
            }
        }
    }
    if !dnat.tcp {
        let mut frame = frames::udp(frames::client(1), dnat.frontend, b"no checksum");
        frame[L4 as usize + 6..L4 as usize + 8].fill(0);
        let out = prog.test_run(&frame)?;
        if out.packet_out[L4 as usize + 6..L4 as usize + 8] != [0, 0] {
            bail!("a UDP datagram without checksum got one");
        }
    }
    Ok(())
}

/// A packet of `k`-varied length (so checksums take many values).
fn frame_to(tcp: bool, client: SocketAddrV4, dst: SocketAddrV4, k: u64) -> Vec<u8> {
    if tcp {
        frames::tcp(client, dst, k.is_multiple_of(2))
    } else {
        frames::udp(client, dst, &k.to_be_bytes()[..(k % 8) as usize])
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn dnat(tcp: bool) -> StatelessDnat {
        StatelessDnat {
            tcp,
            frontend: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 30080),
            backend: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 11), 8080),
            redirect: None,
        }
    }

    fn redirecting(tcp: bool) -> StatelessDnat {
        StatelessDnat {
            redirect: Some(RedirectTo {
                ifindex: 7,
                src_mac: [2, 0, 0, 0, 0, 1],
                dst_mac: [2, 0, 0, 0, 0, 2],
            }),
            ..dnat(tcp)
        }
    }

    /// What the program does, done on the host: the deltas it embeds turn
    /// the checksums of real frames into valid ones (etherparse checks).
    #[test]
    fn embedded_deltas_give_valid_checksums() {
        for tcp in [true, false] {
            let d = dnat(tcp);
            let (csum_at, _) = d.l4_checksum();
            for k in 0..2000 {
                let client = frames::client(k * 31);
                let mut frame = frame_to(tcp, client, d.frontend, k);
                frame[30..34].copy_from_slice(&d.backend.ip().octets());
                frame[36..38].copy_from_slice(&d.backend.port().to_be_bytes());
                for (at, delta) in [(24, d.ip_delta()), (csum_at as usize, d.l4_delta())] {
                    let old = u16::from_le_bytes([frame[at], frame[at + 1]]);
                    frame[at..at + 2].copy_from_slice(&apply_delta(old, delta).to_le_bytes());
                }
                let seen = frames::parse_checked(&frame).unwrap();
                assert_eq!((seen.src, seen.dst), (client, d.backend));
            }
        }
    }

    #[test]
    fn a_delta_undoes_its_reverse() {
        let (a, b) = ([198, 51, 100, 1, 0x75, 0x80], [203, 0, 113, 11, 0x1f, 0x90]);
        for checksum in [0x0000, 0x1234, 0xfffe, 0xffff] {
            let there = apply_delta(checksum, checksum_delta(&a, &b));
            let back = apply_delta(there, checksum_delta(&b, &a));
            assert!(back == checksum || back | checksum == 0xffff && back & checksum == 0);
        }
        // No change, no delta (0 or its one's-complement twin 0xffff).
        assert!(matches!(checksum_delta(&a, &a), 0 | 0xffff));
        assert!(!matches!(checksum_delta(&a, &b), 0 | 0xffff));
    }

    /// The program is straight-line: every jump goes forward, to an exit
    /// or (for UDP) over the L4 update.
    #[test]
    fn the_program_only_jumps_forward() {
        const EXIT: u8 = 0x95;
        const CALL: u8 = 0x85;
        for program in [
            dnat(true),
            dnat(false),
            redirecting(true),
            redirecting(false),
        ] {
            let insns = program.program();
            assert_eq!(insns.last().unwrap().code, EXIT);
            for (i, insn) in insns.iter().enumerate() {
                if matches!(insn.code & 0x07, 0x05 | 0x06) && !matches!(insn.code, EXIT | CALL) {
                    assert!(insn.off > 0, "insn {i} jumps back");
                    assert!(i + 1 + (insn.off as usize) < insns.len());
                }
            }
        }
    }

    /// Only the redirecting variant calls a helper, once, right before
    /// its own exit.
    #[test]
    fn only_the_redirecting_variant_redirects() {
        for tcp in [true, false] {
            assert!(!dnat(tcp).program().iter().any(|insn| insn.code == 0x85));
            let insns = redirecting(tcp).program();
            let calls: Vec<usize> = (0..insns.len())
                .filter(|&i| insns[i].code == 0x85)
                .collect();
            assert_eq!(calls.len(), 1);
            assert_eq!(insns[calls[0]].imm, BPF_FUNC_REDIRECT);
            assert_eq!(insns[calls[0] + 1].code, 0x95);
        }
    }
}
