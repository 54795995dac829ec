//! The connection table's clock: seconds of `CLOCK_MONOTONIC` at the
//! tick's resolution (`lb_common::ct::seconds` of the coarse clock), read
//! through a per-CPU cache keyed by the jiffy.
//!
//! Why a cache: the coarse clock moves only at a tick, and the kernel
//! inlines `bpf_jiffies64` into one load, while `bpf_ktime_get_coarse_ns`
//! is a helper call (two calls and returns, each paying the CPU's return
//! mitigations) that every established packet made. Within a jiffy the
//! cached second is the one the coarse clock gives.
//!
//! The kernel moves jiffies just before the timekeeper, so a read between
//! the two caches the previous tick's second for the rest of the jiffy:
//! one CPU may then see a second behind another for at most one tick.
//! The table's rules take that (`lb_common::ct`: an age is counted only
//! when the clock is past its start).

use aya_ebpf::{
    helpers::generated::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::map,
    maps::PerCpuArray,
};
use lb_common::ct::seconds;

/// The second read at a jiffy.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct TickSecond {
    jiffies: u64,
    second: u32,
    _pad: u32,
}

/// Slot 0, per CPU (never pinned: a cache, private to each load).
#[map(name = "lb_ct_clock")]
static TICK_SECOND: PerCpuArray<TickSecond> = PerCpuArray::with_max_entries(1, 0);

/// The coarse second now.
#[inline(always)]
pub fn now_s() -> u32 {
    // SAFETY: a plain helper call, inlined by the kernel.
    let jiffies = unsafe { bpf_jiffies64() };
    let Some(cached) = TICK_SECOND.get_ptr_mut(0) else {
        return read();
    };
    // SAFETY: this CPU's slot; nothing else writes it while we run.
    unsafe {
        // Second 0 (the first after boot) is never taken from the cache,
        // so its zeroed slots are never mistaken for a reading.
        if (*cached).jiffies == jiffies && (*cached).second != 0 {
            return (*cached).second;
        }
        let second = read();
        *cached = TickSecond {
            jiffies,
            second,
            _pad: 0,
        };
        second
    }
}

#[inline(always)]
fn read() -> u32 {
    // SAFETY: a plain helper call.
    seconds(unsafe { bpf_ktime_get_coarse_ns() })
}
