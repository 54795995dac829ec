//! How a traced new flow's slot was picked, by the frontend's balancing
//! algorithm (`lb.kubernetes.io/algorithm`); the socket hooks always hash
//! the socket's cookie.

use lb_common::{TRACE_SOCKET_HASH, TraceRecord};

use crate::{datapath::codec::algorithm_from_code, model::Algorithm};

/// The step that says how the slot was picked in a table of `size` slots,
/// and the `decided_by` name.
pub(super) fn slot_step(record: &TraceRecord, size: usize) -> (String, &'static str) {
    let slot = record.slot;
    if record.steps & TRACE_SOCKET_HASH != 0 {
        return (
            format!(
                "new flow: the hash of the socket's cookie picked Maglev slot {slot} of {size}"
            ),
            "socket-hash",
        );
    }
    match algorithm_from_code(record.frontend.algorithm()) {
        Algorithm::Maglev => (
            format!("new flow: the hash of the flow's 5-tuple picked Maglev slot {slot} of {size}"),
            "maglev",
        ),
        Algorithm::Random => (
            format!(
                "new flow (algorithm random): a random draw picked slot {slot} of {size} (another run may pick another)"
            ),
            "random",
        ),
        Algorithm::LeastConnections => (
            format!(
                "new flow (algorithm least-connections): of two random slots' backends, the one with fewer live connections, in slot {slot} of {size} (another run may pick another)"
            ),
            "least-connections",
        ),
    }
}
