//! The selection window, counted per CPU (`lb_common::readers`): from the
//! first read of a Maglev slot, an affinity entry or a backend for a new
//! flow to the end of the write of its connection entry (or the socket's
//! translation). The agent rewrites a table that keeps its size in place,
//! then waits until every CPU was seen empty before it purges or removes
//! the backends the old slots named; a program that read an old slot is
//! inside until what it chose is written, where the purge finds it.
//!
//! [`enter`] counts the reader in and returns a [`Reading`] that counts it
//! out when dropped, so every path out of the window, each `?` and early
//! return included, leaves it.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use lb_common::readers::{READERS as NAME, READERS_ENTERED, READERS_LEFT, READERS_SLOTS};

use crate::trace;

/// `READERS_ENTERED`, `READERS_LEFT`: readers in and out, on this CPU.
#[map(name = "lb_readers_v1")]
pub static READERS: PerCpuArray<u64> = PerCpuArray::pinned(READERS_SLOTS, 0);

const _: () = assert!(crate::maps::str_eq("lb_readers_v1", NAME));

/// A program inside the selection window; leaves it when dropped.
pub struct Reading {
    /// This CPU's `left`; null when nothing was counted in (a trace).
    left: *mut u64,
}

/// Enters the selection window: the reads that follow are counted until
/// the returned value is dropped. A trace (dry run) writes nothing, so it
/// is no reader the agent must wait for.
#[inline(always)]
#[must_use = "the window ends when the Reading is dropped"]
pub fn enter() -> Reading {
    let none = Reading {
        left: core::ptr::null_mut(),
    };
    if trace::dry_run() {
        return none;
    }
    let (Some(entered), Some(left)) = (
        READERS.get_ptr_mut(READERS_ENTERED),
        READERS.get_ptr_mut(READERS_LEFT),
    ) else {
        return none;
    };
    // Before any read of the window: a full barrier, so a writer that
    // stored its slots and then fenced either sees this count or is seen
    // by every read below.
    add_ordered(entered);
    Reading { left }
}

impl Drop for Reading {
    #[inline(always)]
    fn drop(&mut self) {
        if !self.left.is_null() {
            // After every write of the window: a full barrier, so a writer
            // that sees this count sees the connection entry too.
            add_ordered(self.left);
        }
    }
}

/// Adds one to `counter` as a fully ordered atomic:
/// `BPF_ATOMIC | BPF_ADD | BPF_FETCH` (`r1 = atomic_fetch_add((u64 *)(r2 +
/// 0), r1)` in `llvm-objdump -d` of the object), which the BPF memory model
/// makes fully ordered, and which the x86 JIT emits as `lock xadd`. An add
/// without the fetch (`lock *(u64 *)(r2 + 0) += r1`, what LLVM makes of
/// an atomic add whose result is unused, and all it makes for this
/// object's `--cpu generic`, which refuses a used result) is unordered in
/// the model, so the instruction is written out. The asm may touch any
/// memory, so the compiler keeps every read and write of the window on
/// its side of it.
#[inline(always)]
fn add_ordered(counter: *mut u64) {
    // SAFETY: `counter` is a valid, aligned per-CPU map value pointer for
    // the program's run (the verifier checks the access); every writer of
    // it goes through atomics (a program that interrupts this one on the
    // same CPU adds to the same counter).
    unsafe {
        core::arch::asm!(
            "{one} = atomic_fetch_add((u64 *)({counter} + 0), {one})",
            counter = in(reg) counter,
            one = inout(reg) 1u64 => _,
            options(nostack),
        );
    }
}
