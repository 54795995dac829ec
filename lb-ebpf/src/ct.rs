//! The packet hooks' connection table, both directions: a new flow gets an
//! original entry (client -> frontend, naming the backend) and a reply entry
//! (backend -> client, naming the frontend); every packet that finds its
//! entry refreshes its last-seen time. Keys come from `lb_common::flow`,
//! the one place they are built.
//!
//! In a trace (`DRY_RUN`, see [`crate::trace`]) nothing is written: no
//! entry is created and no last-seen time refreshed.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use lb_common::{Ct4Key, Ct4Value, Endpoint4, Flow4};

use crate::{maps::CT4, trace};

/// What a connection-table entry says about its flow.
pub struct Entry {
    /// The backend (original entry) or the frontend (reply entry) to
    /// rewrite to.
    pub nat: Endpoint4,
    pub backend_id: u32,
}

/// The entry of a flow's first direction: `flow` is client -> frontend.
#[inline(always)]
pub fn lookup_original(flow: Flow4) -> Option<Entry> {
    touch(&Ct4Key::original(flow))
}

/// The entry of a flow's replies: `reply` is backend -> client.
#[inline(always)]
pub fn lookup_reply(reply: Flow4) -> Option<Entry> {
    touch(&Ct4Key::reply(reply))
}

#[inline(always)]
fn touch(key: &Ct4Key) -> Option<Entry> {
    let entry = CT4.get_ptr_mut(key)?;
    // SAFETY: a valid map value pointer; fields are plain data.
    unsafe {
        if !trace::dry_run() {
            (*entry).last_seen_ns = bpf_ktime_get_ns();
        }
        Some(Entry {
            nat: (*entry).nat(),
            backend_id: (*entry).backend_id,
        })
    }
}

/// Enters a new flow (`flow` is client -> frontend) translated to
/// `backend`, in both directions.
#[inline(always)]
pub fn create(flow: Flow4, backend_id: u32, backend: Endpoint4, service_id: u32) {
    if trace::dry_run() {
        return;
    }
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let original = Ct4Value {
        nat_addr_be: backend.addr_be,
        nat_port_be: backend.port_be,
        _pad: 0,
        backend_id,
        service_id,
        created_ns: now,
        last_seen_ns: now,
    };
    let reply = Ct4Value {
        nat_addr_be: flow.dst.addr_be,
        nat_port_be: flow.dst.port_be,
        ..original
    };
    // The reply entry first: once the original entry exists, later packets
    // of the flow rely on it. An insert can only fail on memory pressure;
    // the flow is still translated (its replies then pass untranslated,
    // which the client's stack resets).
    let _ = CT4.insert(&Ct4Key::reply(flow.reply_via(backend)), &reply, 0);
    let _ = CT4.insert(&Ct4Key::original(flow), &original, 0);
}
