//! Per-CPU verdict counters. Every packet a packet hook sees increments
//! exactly one counter; the socket hooks count translations and rejections.
//! Per service port, new flows, established packets, rejections and drops
//! are counted too. A trace (dry run) counts nothing.

use lb_common::reason::Reason;

use crate::{
    maps::{SERVICE_STATS, STATS},
    trace,
};

#[inline(always)]
pub fn count(reason: Reason) {
    if trace::dry_run() {
        return;
    }
    if let Some(counter) = STATS.get_ptr_mut(reason as u32) {
        // SAFETY: a per-CPU slot, only this CPU writes it while we run.
        unsafe { *counter += 1 };
    }
}

/// Counts `reason` for the service port `service_id`, when it is one the
/// per-service counters track.
#[inline(always)]
pub fn count_service(service_id: u32, reason: Reason) {
    if trace::dry_run() {
        return;
    }
    let Some(counters) = SERVICE_STATS.get_ptr_mut(service_id) else {
        return;
    };
    // SAFETY: a per-CPU slot, only this CPU writes it while we run.
    unsafe {
        match reason {
            Reason::DnatNew | Reason::SockConnect | Reason::SockSendmsg => {
                (*counters).new_flows += 1
            }
            Reason::DnatEstablished => (*counters).established += 1,
            Reason::RejectNoEndpoints => (*counters).rejected += 1,
            Reason::DropNoLocalEndpoint
            | Reason::DropSourceRange
            | Reason::DropSnatPortExhausted => (*counters).dropped += 1,
            _ => {}
        }
    }
}
