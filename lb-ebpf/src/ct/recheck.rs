//! Re-checking a hit before it is used: the entry names a backend id, and
//! the agent may have removed that backend, reused its id for another
//! address, or given the frontend to another Service since.
//!
//! - A frontend that belongs to another Service port now: its old flows
//!   are not followed (`drop_ct_stale`; the Service they were made for is
//!   gone).
//! - A backend that is gone, or whose id names another address now (the
//!   agent reused the id): the backends map holds every endpoint some
//!   Service port's EndpointSlices list, whatever its conditions, so a
//!   backend missing from it is no pod of any Service any more and its
//!   address may be another pod's soon. A packet that may open a flow (a
//!   TCP SYN, an SCTP INIT, any UDP datagram) chooses again, as after
//!   kube-proxy's conntrack cleanup of UDP flows to endpoints that are no
//!   longer serving (pkg/proxy/conntrack/cleanup.go); the other packets
//!   are dropped (`drop_ct_backend_gone`), never sent to the old address.
//! - A backend still listed (terminating while others are ready, or not
//!   ready) keeps its established flows, as kube-proxy's conntrack keeps
//!   them: only new connections avoid it (it is in no table).

use lb_common::{FrontendValue, reason::Reason};

use super::Entry;
use crate::maps::BACKENDS4;

/// Whether `entry` (an original entry) may translate a packet to `fe`:
/// `Ok`, or why not (the drop reason of a packet that may not choose
/// again).
#[inline(always)]
pub fn still_valid(entry: &Entry, fe: &FrontendValue) -> Result<(), Reason> {
    if entry.service_id != fe.service_id {
        return Err(Reason::DropCtStale);
    }
    // SAFETY: copied out at once.
    match unsafe { BACKENDS4.get(&entry.backend_id) } {
        Some(backend) if backend.endpoint() == entry.nat => Ok(()),
        _ => Err(Reason::DropCtBackendGone),
    }
}
