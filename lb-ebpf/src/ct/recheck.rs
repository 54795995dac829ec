//! Re-checking a hit before it is used: the entry names a backend id, and
//! the agent may have removed that backend, reused its id for another
//! address, or given the frontend to another Service since. Such an entry
//! must not send the packet to an address that may now be someone else's
//! pod. A terminating backend is still in the backends map: its
//! established flows keep it, as under kube-proxy (conntrack keeps them).

use lb_common::FrontendValue;

use super::Entry;
use crate::maps::BACKENDS4;

/// Whether `entry` (an original entry) still translates to what the maps
/// say: its backend exists at the same address and port, and its frontend
/// still belongs to the same Service port.
#[inline(always)]
pub fn still_valid(entry: &Entry, fe: &FrontendValue) -> bool {
    if entry.service_id != fe.service_id {
        return false;
    }
    // SAFETY: copied out at once.
    match unsafe { BACKENDS4.get(&entry.backend_id) } {
        Some(backend) => backend.endpoint() == entry.nat,
        None => false,
    }
}
