//! The live connections per backend that least-connections compares
//! (`lb_common::algorithm::BACKEND_CONNECTIONS`), recounted from the
//! connection table at every sweep. Between sweeps the datapath keeps the
//! counts itself (one more when it enters a flow, one less when it forgets
//! one); what it cannot see is counted here: flows the sweep expires, flows
//! an LRU eviction or an agent purge removed, and flows that closed (a FIN
//! or an RST: still in the table for their closing timeout, no longer a
//! load on the backend). Increments that land between the table's read and
//! the rewrite are lost until the next sweep (10 s): the counts are a load
//! estimate, exact after each sweep, never a source of a wrong verdict.

use std::collections::{BTreeMap, HashMap};

use foldhash::fast::RandomState;
use lb_common::ct::{expired, is_ending};

use super::ct_flows::Flows;
use crate::datapath::{KernelMaps, MapsError};

/// Live flows per backend id, for ids below `capacity` (only the backends
/// with a live flow: a dense vector of every id was 8 MiB at the default
/// capacity, at every sweep): a flow counts once (its fresher entry
/// deciding, see `ct_flows`), unless it expired at `now_s` or is closing
/// or closed.
pub fn live_counts(flows: &Flows, now_s: u32, capacity: u32) -> BTreeMap<u32, u64> {
    // Counted in a hash map (one probe a flow), ordered once at the end.
    let mut counts: HashMap<u32, u64, RandomState> = HashMap::default();
    for flow in flows.iter() {
        if is_ending(flow.state)
            || expired(flow.state, flow.last_seen_s, now_s)
            || flow.backend_id >= capacity
        {
            continue;
        }
        *counts.entry(flow.backend_id).or_default() += 1;
    }
    counts.into_iter().collect()
}

/// Rewrites the datapath's counts from the table's `flows` read at `now_s`.
pub fn recount(maps: &mut KernelMaps, flows: &Flows, now_s: u32) -> Result<(), MapsError> {
    let counts = live_counts(flows, now_s, maps.backend_connections_capacity());
    maps.set_backend_connections(&counts)
}

#[cfg(test)]
mod tests {
    use lb_common::{
        Ct4Key, Ct4Value, Endpoint4, Flow4, PROTO_SCTP, PROTO_TCP,
        ct::{
            CT_CLOSED, CT_CLOSING, CT_ESTABLISHED, CT_SCTP_SHUTDOWN, CT_SYN_SENT,
            TIMEOUT_SYN_SENT_S,
        },
    };

    use super::*;
    use crate::agent::ct_flows::entry;

    /// Both entries of a flow from client port `sport` to `backend_id`.
    fn flow(sport: u16, backend_id: u32, state: u8, last_seen_s: u32) -> [(Ct4Key, Ct4Value); 2] {
        flow_of(PROTO_TCP, sport, backend_id, state, last_seen_s)
    }

    /// [`flow`] of protocol `proto`.
    fn flow_of(
        proto: u8,
        sport: u16,
        backend_id: u32,
        state: u8,
        last_seen_s: u32,
    ) -> [(Ct4Key, Ct4Value); 2] {
        let client = Endpoint4::new(u32::from_be_bytes([198, 51, 100, 7]).to_be(), sport.to_be());
        let frontend = Endpoint4::new(u32::from_be_bytes([192, 0, 2, 10]).to_be(), 80u16.to_be());
        let backend = Endpoint4::new(
            u32::from_be_bytes([10, 0, 0, backend_id as u8]).to_be(),
            8080u16.to_be(),
        );
        let original_flow = Flow4::new(client, frontend, proto);
        let value = |nat: Endpoint4| entry(nat, backend_id, state, last_seen_s);
        [
            (Ct4Key::original(original_flow), value(backend)),
            (
                Ct4Key::reply(original_flow.reply_via(backend)),
                value(frontend),
            ),
        ]
    }

    #[test]
    fn a_flow_counts_once_and_closed_or_expired_flows_not_at_all() {
        let now = 1000;
        let mut entries = Vec::new();
        entries.extend(flow(1, 1, CT_ESTABLISHED, now));
        entries.extend(flow(2, 1, CT_ESTABLISHED, now));
        // Only the reply entry left (the original was evicted): still one flow.
        entries.push(flow(3, 2, CT_ESTABLISHED, now)[1]);
        entries.extend(flow(4, 2, CT_CLOSING, now));
        entries.extend(flow(5, 3, CT_CLOSED, now));
        entries.extend(flow(6, 3, CT_SYN_SENT, now - TIMEOUT_SYN_SENT_S - 1));
        // An SCTP association shutting down is no load either.
        entries.extend(flow_of(PROTO_SCTP, 8, 3, CT_SCTP_SHUTDOWN, now));
        // A backend id past the map's end is not counted (and not a panic).
        entries.extend(flow(7, 9, CT_ESTABLISHED, now));
        assert_eq!(
            live_counts(&Flows::of(&entries), now, 4),
            BTreeMap::from([(1, 2), (2, 1)])
        );
    }
}
