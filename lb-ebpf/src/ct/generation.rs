//! The recheck generation the agent bumps after every write to the
//! backends map (`lb_common::ct::generation`): an established flow's
//! packets skip the backend recheck while it has not moved.

use aya_ebpf::{macros::map, maps::Array};
use lb_common::{
    Ct4Value,
    ct::generation::{CT_GENERATION as NAME, entry_generation},
};

use crate::trace;

/// `BPF_F_MMAPABLE`: the agent bumps slot 0 through a mapping of it.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Slot 0: the generation (0 until the agent first writes a backend).
#[map(name = "lb_ct_gen_v1")]
pub static CT_GENERATION: Array<u32> = Array::pinned(1, BPF_F_MMAPABLE);

const _: () = assert!(crate::maps::str_eq("lb_ct_gen_v1", NAME));

/// The generation now, as an entry remembers it.
#[inline(always)]
pub fn current() -> u16 {
    entry_generation(CT_GENERATION.get(0).copied().unwrap_or(0))
}

/// The original entry at `entry` (its copy `value`) passed its recheck at
/// `generation`: written only when it changed (no shared cache line
/// written per packet); never in a trace.
#[inline(always)]
pub fn passed(entry: *mut Ct4Value, value: &Ct4Value, generation: u16) {
    if value.checked_gen != generation && !trace::dry_run() {
        // SAFETY: a valid map value pointer; plain data.
        unsafe { (*entry).checked_gen = generation };
    }
}
