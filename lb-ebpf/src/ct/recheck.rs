//! Re-checking a hit before it is used: the entry names a backend id, and
//! the agent may have removed that backend, reused its id for another
//! address, or given the frontend to another Service since.
//!
//! - A frontend that belongs to another Service port now: its old flows
//!   are not followed (the Service they were made for is gone).
//! - A backend that is gone, or whose id names another address now (the
//!   agent reused the id): a packet that may open a flow (a TCP SYN, an
//!   SCTP INIT, any UDP datagram) chooses again, as after kube-proxy's conntrack cleanup
//!   of UDP flows to removed endpoints (pkg/proxy/conntrack/cleanup.go);
//!   the other packets of an established TCP connection (or SCTP
//!   association) keep going to the
//!   address the entry holds (never to the id's new address), as
//!   kube-proxy's conntrack keeps them: a draining pod (terminating while
//!   others are ready) leaves the backends map but still serves its
//!   connections.

use lb_common::{
    FrontendValue,
    ct::{is_connection, opens_flow},
};

use super::Entry;
use crate::maps::BACKENDS4;

/// Whether `entry` (an original entry) may translate this packet.
#[inline(always)]
pub fn still_valid(entry: &Entry, fe: &FrontendValue, proto: u8, tcp_flags: u8) -> bool {
    if entry.service_id != fe.service_id {
        return false;
    }
    // SAFETY: copied out at once.
    match unsafe { BACKENDS4.get(&entry.backend_id) } {
        Some(backend) if backend.endpoint() == entry.nat => true,
        _ => is_connection(proto) && !opens_flow(proto, tcp_flags),
    }
}
