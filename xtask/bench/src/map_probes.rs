//! The per-packet section's map probes: the bench's own XDP programs that
//! do one map operation and nothing else, measured beside the XDP_PASS
//! floor in the same run, so the price of the operations lb's paths are
//! made of is a figure, not an estimate. Each map has lb's connection
//! table's key and value sizes (16 and 32 bytes) and capacity; each probe
//! proves it did what it says by its verdict (XDP_PASS only when the
//! lookup hit, missed, or the insert succeeded, as named; XDP_DROP else).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result};
use lb_common::{CT_NEW_SHARE, DEFAULT_CT_ENTRIES, MAX_FRONTENDS};

use crate::{
    bpf_asm::{Alu, Asm, Cond, R0, R1, R2, R3, R4, R5, R10, Size},
    packet_streams::{Expect, Frames, Program, Stream},
    raw_bpf::{Hook, RawProgram, syscall},
};

/// The per-packet section's method text for the probes.
pub const METHOD: &str = "Beside those, on the same new-flow frames, the bench's map probes: XDP programs that do one map operation and return (a hash lookup that hits, an LRU hash lookup that hits and one that misses, an LRU insert of a new key per frame, with one shared LRU list or per-CPU lists, and into a table already full, with either list (every insert evicts, as in live traffic once the table of new flows has filled); 16-byte keys, 32-byte values, lb's table sizes), proven by their verdicts: the price of the operations lb's paths are made of.";

pub const CASE: &str = "one map operation (bench probe)";
pub const HASH_HIT: &str = "hash lookup, hit";
pub const LRU_HIT: &str = "LRU hash lookup, hit";
pub const LRU_MISS: &str = "LRU hash lookup, miss";
pub const LRU_INSERT: &str = "LRU hash insert, new key";
pub const LRU_INSERT_PER_CPU: &str = "LRU hash insert, new key, per-CPU lists";
pub const LRU_INSERT_FULL: &str = "LRU hash insert, new key, full table";
pub const LRU_INSERT_FULL_PER_CPU: &str = "LRU hash insert, new key, full table, per-CPU lists";

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
/// `BPF_F_NO_COMMON_LRU`: an LRU list per CPU instead of one shared.
const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;
const KEY_SIZE: u32 = 16;
const VALUE_SIZE: u32 = 32;
const HELPER_MAP_LOOKUP: i32 = 1;
const HELPER_MAP_UPDATE: i32 = 2;
const XDP_DROP: i32 = 1;
const XDP_PASS: i32 = 2;
/// The key the lookup probes look for (its first word; the rest is zero).
const PROBE_KEY: i32 = 0x0a0b_0c0d;

/// A probe: its name, and its program (holding its map).
pub struct Probe {
    pub name: &'static str,
    pub program: RawProgram,
    _map: OwnedFd,
}

/// Loads every probe, its map created and (for the hits) filled.
pub fn load() -> Result<Vec<Probe>> {
    let ct = DEFAULT_CT_ENTRIES;
    let new_flows = DEFAULT_CT_ENTRIES / CT_NEW_SHARE;
    Ok(vec![
        lookup(HASH_HIT, BPF_MAP_TYPE_HASH, MAX_FRONTENDS, true)?,
        lookup(LRU_HIT, BPF_MAP_TYPE_LRU_HASH, ct, true)?,
        lookup(LRU_MISS, BPF_MAP_TYPE_LRU_HASH, ct, false)?,
        insert(LRU_INSERT, new_flows, 0)?,
        insert(LRU_INSERT_PER_CPU, new_flows, BPF_F_NO_COMMON_LRU)?,
        full(insert(LRU_INSERT_FULL, new_flows, 0)?, new_flows)?,
        full(
            insert(LRU_INSERT_FULL_PER_CPU, new_flows, BPF_F_NO_COMMON_LRU)?,
            new_flows,
        )?,
    ])
}

/// A stream per probe, on the frames `frames` gives (new flows: each
/// insert's key is new), each proven by its XDP_PASS.
pub fn streams<'a>(probes: &'a [Probe], frames: impl Fn() -> Frames) -> Vec<Stream<'a>> {
    let passed = || Expect::Unchanged {
        verdict: XDP_PASS as u32,
    };
    probes
        .iter()
        .map(|probe| {
            let program = Program::Bench(&probe.program);
            Stream::bench(CASE, probe.name, program, frames(), passed())
        })
        .collect()
}

/// A lookup of `PROBE_KEY` in a map of `map_type` holding it (`hit`) or
/// empty: XDP_PASS when the lookup found what the probe is named for.
fn lookup(name: &'static str, map_type: u32, entries: u32, hit: bool) -> Result<Probe> {
    let map = create_map(map_type, entries, 0).with_context(|| format!("the {name} probe"))?;
    if hit {
        let mut key = [0u8; KEY_SIZE as usize];
        key[..4].copy_from_slice(&PROBE_KEY.to_ne_bytes());
        update(&map, &key, &[0u8; VALUE_SIZE as usize])?;
    }
    let mut asm = Asm::new();
    let found = asm.new_label();
    asm.st(Size::W, R10, -16, PROBE_KEY);
    for off in [-12, -8, -4] {
        asm.st(Size::W, R10, off, 0);
    }
    asm.ld_map_fd(R1, map.as_raw_fd())
        .mov_reg(R2, R10)
        .alu(Alu::Add, R2, -16)
        .call(HELPER_MAP_LOOKUP)
        .jmp_imm(Cond::Ne, R0, 0, found);
    let (on_found, on_missing) = if hit {
        (XDP_PASS, XDP_DROP)
    } else {
        (XDP_DROP, XDP_PASS)
    };
    asm.alu(Alu::Mov, R0, on_missing).exit();
    asm.label(found).alu(Alu::Mov, R0, on_found).exit();
    program(name, asm, map)
}

/// An insert (`BPF_ANY`) of the frame's source address and ports as the
/// key, so each new-flow frame inserts a new key and a full map evicts:
/// XDP_PASS when the insert succeeded.
fn insert(name: &'static str, entries: u32, flags: u32) -> Result<Probe> {
    let map = create_map(BPF_MAP_TYPE_LRU_HASH, entries, flags)
        .with_context(|| format!("the {name} probe"))?;
    let mut asm = Asm::new();
    let drop = asm.new_label();
    // Ethernet (14) and an option-less IPv4 header (20), then the ports.
    asm.ldx(Size::W, R2, R1, 0) // xdp_md.data
        .ldx(Size::W, R3, R1, 4) // xdp_md.data_end
        .mov_reg(R4, R2)
        .alu(Alu::Add, R4, 38)
        .jmp_reg(Cond::Gt, R4, R3, drop)
        .ldx(Size::W, R5, R2, 26)
        .stx(Size::W, R10, -16, R5)
        .ldx(Size::W, R5, R2, 34)
        .stx(Size::W, R10, -12, R5)
        .st(Size::W, R10, -8, 0)
        .st(Size::W, R10, -4, 0);
    for off in (-48..-16).step_by(4) {
        asm.st(Size::W, R10, off, 0);
    }
    asm.ld_map_fd(R1, map.as_raw_fd())
        .mov_reg(R2, R10)
        .alu(Alu::Add, R2, -16)
        .mov_reg(R3, R10)
        .alu(Alu::Add, R3, -48)
        .alu(Alu::Mov, R4, 0)
        .call(HELPER_MAP_UPDATE)
        .jmp32_imm(Cond::Ne, R0, 0, drop)
        .alu(Alu::Mov, R0, XDP_PASS)
        .exit();
    asm.label(drop).alu(Alu::Mov, R0, XDP_DROP).exit();
    program(name, asm, map)
}

/// `probe`'s map filled to its `entries` with keys no frame has (their
/// last word set, which a frame's key leaves zero).
fn full(probe: Probe, entries: u32) -> Result<Probe> {
    let value = [0u8; VALUE_SIZE as usize];
    for i in 0..entries {
        let mut key = [0u8; KEY_SIZE as usize];
        key[12..].copy_from_slice(&(i + 1).to_ne_bytes());
        update(&probe._map, &key, &value)?;
    }
    Ok(probe)
}

fn program(name: &'static str, asm: Asm, map: OwnedFd) -> Result<Probe> {
    let insns = asm.finish().map_err(anyhow::Error::msg)?;
    let program = RawProgram::load(Hook::Xdp, "bench_map_probe", &insns)
        .with_context(|| format!("loading the {name} probe"))?;
    Ok(Probe {
        name,
        program,
        _map: map,
    })
}

/// `BPF_MAP_CREATE` of a map with the connection table's key and value
/// sizes.
fn create_map(map_type: u32, entries: u32, flags: u32) -> Result<OwnedFd> {
    let mut attr = [0u8; 72];
    for (at, field) in [map_type, KEY_SIZE, VALUE_SIZE, entries, flags]
        .into_iter()
        .enumerate()
    {
        attr[at * 4..at * 4 + 4].copy_from_slice(&field.to_ne_bytes());
    }
    let name = b"bench_probe";
    attr[28..28 + name.len()].copy_from_slice(name);
    let fd = syscall(BPF_MAP_CREATE, &mut attr).context("creating a probe map")?;
    // SAFETY: a new fd the kernel just returned to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_MAP_UPDATE_ELEM` of `key` to `value` (`BPF_ANY`).
fn update(map: &OwnedFd, key: &[u8], value: &[u8]) -> Result<()> {
    let mut attr = [0u8; 32];
    attr[0..4].copy_from_slice(&(map.as_raw_fd() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(key.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(value.as_ptr() as u64).to_ne_bytes());
    syscall(BPF_MAP_UPDATE_ELEM, &mut attr).context("filling a probe map")?;
    Ok(())
}
