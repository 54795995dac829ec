//! Per-CPU verdict counters. Every packet a packet hook sees increments
//! exactly one counter; the socket hooks count translations and rejections.

use lb_common::reason::Reason;

use crate::maps::STATS;

#[inline(always)]
pub fn count(reason: Reason) {
    if let Some(counter) = STATS.get_ptr_mut(reason as u32) {
        // SAFETY: a per-CPU slot, only this CPU writes it while we run.
        unsafe { *counter += 1 };
    }
}
