//! A tiny eBPF assembler: the handful of instructions the bench's own
//! programs need (loads and stores of packet bytes, 64-bit ALU on
//! immediates, conditional jumps to labels, exit), encoded as the kernel
//! reads them (`struct bpf_insn`, little-endian). No dependency on an
//! LLVM or a loader library: the limit program must be exactly what the
//! bench says it is.

/// A register, r0..r10.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg(pub u8);

pub const R0: Reg = Reg(0);
pub const R1: Reg = Reg(1);
pub const R2: Reg = Reg(2);
pub const R3: Reg = Reg(3);
pub const R4: Reg = Reg(4);
pub const R5: Reg = Reg(5);
pub const R6: Reg = Reg(6);
pub const R7: Reg = Reg(7);
pub const R8: Reg = Reg(8);
pub const R9: Reg = Reg(9);
/// The frame pointer (read only).
pub const R10: Reg = Reg(10);

/// Width of a memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    B,
    H,
    W,
}

impl Size {
    fn bits(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
        }
    }
}

/// ALU operations (BPF_ALU64 or BPF_ALU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alu {
    Add,
    Or,
    And,
    Rsh,
    Mod,
    Xor,
    Mov,
}

impl Alu {
    fn bits(self) -> u8 {
        match self {
            Alu::Add => 0x00,
            Alu::Or => 0x40,
            Alu::And => 0x50,
            Alu::Rsh => 0x70,
            Alu::Mod => 0x90,
            Alu::Xor => 0xa0,
            Alu::Mov => 0xb0,
        }
    }
}

/// Jump conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    Eq,
    Gt,
    Ne,
}

impl Cond {
    fn bits(self) -> u8 {
        match self {
            Cond::Eq => 0x10,
            Cond::Gt => 0x20,
            Cond::Ne => 0x50,
        }
    }
}

const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_JMP: u8 = 0x05;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP32: u8 = 0x06;
const CLASS_ALU64: u8 = 0x07;
/// BPF_END with BPF_TO_BE, in the 32-bit ALU class.
const OP_END_TO_BE: u8 = 0xd0 | SRC_REG;
const OP_CALL: u8 = 0x80;
const MODE_MEM: u8 = 0x60;
const SRC_REG: u8 = 0x08;
const OP_EXIT: u8 = 0x90;
/// BPF_LD | BPF_IMM | BPF_DW.
const OP_LD_IMM64: u8 = 0x18;
/// The source register of an `OP_LD_IMM64` whose immediate is a map fd.
const PSEUDO_MAP_FD: u8 = 1;

/// One encoded instruction (`struct bpf_insn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub fn bytes(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[0] = self.code;
        out[1] = (self.src << 4) | (self.dst & 0x0f);
        out[2..4].copy_from_slice(&self.off.to_le_bytes());
        out[4..8].copy_from_slice(&self.imm.to_le_bytes());
        out
    }
}

/// A jump target, placed with [`Asm::label`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

/// A program under construction; jumps name labels, resolved by
/// [`Asm::finish`].
#[derive(Default)]
pub struct Asm {
    insns: Vec<Insn>,
    /// Where each label points (an instruction index), once placed.
    labels: Vec<Option<usize>>,
    /// Jumps to patch: (instruction index, label).
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    fn push(&mut self, code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> &mut Self {
        self.insns.push(Insn {
            code,
            dst: dst.0,
            src: src.0,
            off,
            imm,
        });
        self
    }

    /// `dst = *(size *)(src + off)`
    pub fn ldx(&mut self, size: Size, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.push(CLASS_LDX | MODE_MEM | size.bits(), dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = src`
    pub fn stx(&mut self, size: Size, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(CLASS_STX | MODE_MEM | size.bits(), dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = imm`
    pub fn st(&mut self, size: Size, dst: Reg, off: i16, imm: i32) -> &mut Self {
        self.push(CLASS_ST | MODE_MEM | size.bits(), dst, Reg(0), off, imm)
    }

    /// `dst op= imm` (64-bit; the immediate is sign-extended).
    pub fn alu(&mut self, op: Alu, dst: Reg, imm: i32) -> &mut Self {
        self.push(CLASS_ALU64 | op.bits(), dst, Reg(0), 0, imm)
    }

    /// `dst op= imm` on the low 32 bits (the upper ones are zeroed).
    pub fn alu32(&mut self, op: Alu, dst: Reg, imm: i32) -> &mut Self {
        self.push(CLASS_ALU | op.bits(), dst, Reg(0), 0, imm)
    }

    /// `dst op= src` on the low 32 bits.
    pub fn alu32_reg(&mut self, op: Alu, dst: Reg, src: Reg) -> &mut Self {
        self.push(CLASS_ALU | op.bits() | SRC_REG, dst, src, 0, 0)
    }

    /// `dst = htobe<bits>(dst)` (16, 32 or 64).
    pub fn to_be(&mut self, dst: Reg, bits: i32) -> &mut Self {
        self.push(CLASS_ALU | OP_END_TO_BE, dst, Reg(0), 0, bits)
    }

    /// Calls helper number `helper`; its result is in r0.
    pub fn call(&mut self, helper: i32) -> &mut Self {
        self.push(CLASS_JMP | OP_CALL, Reg(0), Reg(0), 0, helper)
    }

    /// `dst += src` (64-bit).
    pub fn add_reg(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.push(CLASS_ALU64 | Alu::Add.bits() | SRC_REG, dst, src, 0, 0)
    }

    /// `dst = src` (64-bit).
    pub fn mov_reg(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.push(CLASS_ALU64 | Alu::Mov.bits() | SRC_REG, dst, src, 0, 0)
    }

    /// `if (u32)dst cond imm goto label`: a 32-bit compare, so an immediate
    /// with its top bit set matches the zero-extended load it is compared
    /// with.
    pub fn jmp32_imm(&mut self, cond: Cond, dst: Reg, imm: u32, to: Label) -> &mut Self {
        self.fixups.push((self.insns.len(), to));
        self.push(CLASS_JMP32 | cond.bits(), dst, Reg(0), 0, imm as i32)
    }

    /// `if dst cond src goto label` (64-bit, unsigned).
    pub fn jmp_reg(&mut self, cond: Cond, dst: Reg, src: Reg, to: Label) -> &mut Self {
        self.fixups.push((self.insns.len(), to));
        self.push(CLASS_JMP | cond.bits() | SRC_REG, dst, src, 0, 0)
    }

    /// `if dst cond imm goto label` (64-bit): what the verifier takes as a
    /// null check of a map value pointer.
    pub fn jmp_imm(&mut self, cond: Cond, dst: Reg, imm: i32, to: Label) -> &mut Self {
        self.fixups.push((self.insns.len(), to));
        self.push(CLASS_JMP | cond.bits(), dst, Reg(0), 0, imm)
    }

    /// `dst = map` by its file descriptor (`BPF_LD_IMM64` with
    /// `BPF_PSEUDO_MAP_FD`: two instruction slots, the loader's relocation).
    pub fn ld_map_fd(&mut self, dst: Reg, fd: i32) -> &mut Self {
        self.push(OP_LD_IMM64, dst, Reg(PSEUDO_MAP_FD), 0, fd)
            .push(0, Reg(0), Reg(0), 0, 0)
    }

    pub fn exit(&mut self) -> &mut Self {
        self.push(CLASS_JMP | OP_EXIT, Reg(0), Reg(0), 0, 0)
    }

    /// A new label, not yet placed.
    pub fn new_label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Places `label` at the next instruction.
    pub fn label(&mut self, label: Label) -> &mut Self {
        self.labels[label.0] = Some(self.insns.len());
        self
    }

    /// The program, every jump resolved; a label used but never placed, or
    /// one out of a jump's reach, is a bug in the caller.
    pub fn finish(mut self) -> Result<Vec<Insn>, String> {
        for &(at, label) in &self.fixups {
            let target = self.labels[label.0]
                .ok_or_else(|| format!("label {} used but never placed", label.0))?;
            // Offsets count from the instruction after the jump.
            let off = target as i64 - at as i64 - 1;
            self.insns[at].off =
                i16::try_from(off).map_err(|_| format!("jump at {at} out of reach"))?;
        }
        Ok(self.insns)
    }
}

/// The program as the bytes `BPF_PROG_LOAD` takes.
pub fn encode(insns: &[Insn]) -> Vec<u8> {
    insns.iter().flat_map(Insn::bytes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodings checked against the kernel's own opcode table
    /// (include/uapi/linux/bpf.h, bpf_common.h) and `xdp_pass.rs`.
    #[test]
    fn encodes_like_the_kernel_reads() {
        let mut asm = Asm::new();
        asm.alu(Alu::Mov, R0, 2).exit();
        let bytes = encode(&asm.finish().unwrap());
        assert_eq!(
            bytes,
            [0xb7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0]
        );

        let mut asm = Asm::new();
        asm.ldx(Size::W, R2, R1, 4)
            .ldx(Size::H, R5, R2, 12)
            .ldx(Size::B, R5, R2, 23)
            .stx(Size::H, R2, 24, R5)
            .st(Size::W, R2, 30, -1)
            .alu(Alu::Xor, R5, 0xffff)
            .add_reg(R5, R6);
        let insns = asm.finish().unwrap();
        assert_eq!(insns[0].bytes(), [0x61, 0x12, 4, 0, 0, 0, 0, 0]);
        assert_eq!(insns[1].code, 0x69);
        assert_eq!(insns[2].code, 0x71);
        assert_eq!(insns[3].bytes(), [0x6b, 0x52, 24, 0, 0, 0, 0, 0]);
        assert_eq!(
            insns[4].bytes(),
            [0x62, 0x02, 30, 0, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(insns[5].bytes(), [0xa7, 0x05, 0, 0, 0xff, 0xff, 0, 0]);
        assert_eq!(insns[6].bytes(), [0x0f, 0x65, 0, 0, 0, 0, 0, 0]);
    }

    /// The 32-bit ALU, byte swaps and calls (opcodes as bpf.h gives them).
    #[test]
    fn encodes_the_32_bit_alu_swaps_and_calls() {
        let mut asm = Asm::new();
        asm.alu32(Alu::Mov, R9, 7)
            .alu32_reg(Alu::Mov, R8, R7)
            .alu32(Alu::Rsh, R8, 16)
            .alu32(Alu::Mod, R8, 3)
            .alu32(Alu::Or, R8, 1024)
            .alu32_reg(Alu::Add, R9, R1)
            .to_be(R8, 16)
            .call(7);
        let codes: Vec<u8> = asm.finish().unwrap().iter().map(|i| i.code).collect();
        assert_eq!(codes, [0xb4, 0xbc, 0x74, 0x94, 0x44, 0x0c, 0xdc, 0x85]);
    }

    /// `BPF_LD_IMM64` of a map fd as libbpf emits it (0x18, src 1, the fd
    /// in the first slot's immediate, an empty second slot); a 64-bit
    /// `JEQ` immediate is 0x15.
    #[test]
    fn encodes_map_loads_and_64_bit_jumps() {
        let mut asm = Asm::new();
        let out = asm.new_label();
        asm.ld_map_fd(R1, 7)
            .jmp_imm(Cond::Eq, R0, 0, out)
            .label(out)
            .exit();
        let bytes = encode(&asm.finish().unwrap());
        assert_eq!(&bytes[0..8], &[0x18, 0x11, 0, 0, 7, 0, 0, 0]);
        assert_eq!(&bytes[8..16], &[0; 8]);
        assert_eq!(&bytes[16..24], &[0x15, 0x00, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn jumps_resolve_forward_and_backward() {
        let mut asm = Asm::new();
        let end = asm.new_label();
        let top = asm.new_label();
        asm.label(top)
            .jmp32_imm(Cond::Ne, R5, 0x8000_0000, end) // 0 -> 3: off 2
            .jmp_reg(Cond::Gt, R4, R3, end) // 1 -> 3: off 1
            .jmp32_imm(Cond::Eq, R5, 0, top) // 2 -> 0: off -3
            .label(end)
            .exit();
        let insns = asm.finish().unwrap();
        assert_eq!(insns[0].bytes(), [0x56, 0x05, 2, 0, 0, 0, 0, 0x80]);
        assert_eq!(insns[1].bytes(), [0x2d, 0x34, 1, 0, 0, 0, 0, 0]);
        assert_eq!((insns[2].code, insns[2].off), (0x16, -3));
    }

    #[test]
    fn an_unplaced_label_is_an_error() {
        let mut asm = Asm::new();
        let nowhere = asm.new_label();
        asm.jmp32_imm(Cond::Eq, R5, 0, nowhere).exit();
        assert!(asm.finish().is_err());
    }
}
