//! The connection table read as flows, in one pass: each flow's entries
//! (its original and reply keys, as many as the table still has) and its
//! fresher entry, which decides the flow's state, last second and backend.
//! The sweep ([`super::ct_sweep`]) and the per-backend recount
//! ([`super::backend_connections`]) both judge a flow by it, so the agent
//! groups the table once per sweep: at the default `--ct-entries` that is
//! 1,048,576 entries every 10 s.
//!
//! A flow holds its first two keys inline; only a flow with a third (an
//! orphan reply entry of an earlier backend, left by a race or an
//! eviction) allocates. The map is seeded per sweep (foldhash's random
//! state): the keys are tuples a remote client chooses, so the grouping
//! must not be steerable into collisions.

use std::collections::{HashMap, hash_map::Entry};

use foldhash::fast::RandomState;
use lb_common::{Ct4Key, Ct4Value, Flow4};

/// One flow as its entries tell it.
#[derive(Debug)]
pub struct Flow {
    inline: [Ct4Key; 2],
    inline_len: u8,
    more: Vec<Ct4Key>,
    /// The fresher entry's state.
    pub state: u8,
    /// The fresher entry's last second.
    pub last_seen_s: u32,
    /// The fresher entry's backend id.
    pub backend_id: u32,
}

impl Flow {
    fn first(key: &Ct4Key, value: &Ct4Value) -> Flow {
        Flow {
            inline: [*key; 2],
            inline_len: 1,
            more: Vec::new(),
            state: value.state,
            last_seen_s: value.last_seen_s,
            backend_id: value.backend_id,
        }
    }

    /// Another entry of this flow: its key kept once (a flow moving
    /// between the two tables shows a key in each), and it decides when it
    /// is strictly fresher (on a tie the entry read first does).
    fn add(&mut self, key: &Ct4Key, value: &Ct4Value) {
        if !self.keys().any(|known| known == key) {
            if usize::from(self.inline_len) < self.inline.len() {
                self.inline[usize::from(self.inline_len)] = *key;
                self.inline_len += 1;
            } else {
                self.more.push(*key);
            }
        }
        if value.last_seen_s > self.last_seen_s {
            self.state = value.state;
            self.last_seen_s = value.last_seen_s;
            self.backend_id = value.backend_id;
        }
    }

    /// The flow's distinct entry keys.
    pub fn keys(&self) -> impl Iterator<Item = &Ct4Key> {
        self.inline[..usize::from(self.inline_len)]
            .iter()
            .chain(&self.more)
    }
}

/// A table's entries grouped by flow.
pub struct Flows(HashMap<Flow4, Flow, RandomState>);

impl Flows {
    /// Groups `entries` (both tables' as read); an entry of a direction
    /// this build does not know is left out, and so left alone.
    pub fn of(entries: &[(Ct4Key, Ct4Value)]) -> Flows {
        let mut flows =
            HashMap::with_capacity_and_hasher(entries.len() / 2 + 1, RandomState::default());
        for (key, value) in entries {
            let Some(flow) = key.original_flow(value) else {
                continue;
            };
            match flows.entry(flow) {
                Entry::Vacant(vacant) => {
                    vacant.insert(Flow::first(key, value));
                }
                Entry::Occupied(mut known) => known.get_mut().add(key, value),
            }
        }
        Flows(flows)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Flow> {
        self.0.values()
    }
}

/// A connection-table entry for tests of what reads the table: translated
/// to `nat`, naming `backend_id`, in `state` since `last_seen_s`; the rest
/// as a plain (not masqueraded) flow of Service id 1 has it.
#[cfg(test)]
pub(super) fn entry(
    nat: lb_common::Endpoint4,
    backend_id: u32,
    state: u8,
    last_seen_s: u32,
) -> Ct4Value {
    Ct4Value {
        nat_addr_be: nat.addr_be,
        nat_port_be: nat.port_be,
        state,
        flags: 0,
        backend_id,
        service_id: 1,
        created_s: 0,
        last_seen_s,
        peer_addr_be: 0,
        peer_port_be: 0,
        checked_gen: 0,
    }
}

#[cfg(test)]
mod tests {
    use lb_common::{
        Endpoint4, PROTO_TCP,
        ct::{CT_ESTABLISHED, CT_SYN_SENT},
    };

    use super::*;

    fn ep(last: u8, port: u16) -> Endpoint4 {
        Endpoint4::new(u32::from_ne_bytes([10, 0, 0, last]), port.to_be())
    }

    /// The one flow of these tests: client 10.0.0.1:40000 -> 10.0.0.2:80.
    fn flow() -> Flow4 {
        Flow4::new(ep(1, 40_000), ep(2, 80), PROTO_TCP)
    }

    fn original(backend: u8, state: u8, last_seen_s: u32) -> (Ct4Key, Ct4Value) {
        let value = entry(ep(backend, 8080), u32::from(backend), state, last_seen_s);
        (Ct4Key::original(flow()), value)
    }

    fn reply(backend: u8, state: u8, last_seen_s: u32) -> (Ct4Key, Ct4Value) {
        let key = Ct4Key::reply(flow().reply_via(ep(backend, 8080)));
        (
            key,
            entry(flow().dst, u32::from(backend), state, last_seen_s),
        )
    }

    #[test]
    fn a_flows_entries_group_under_it_and_the_fresher_decides() {
        let entries = [original(3, CT_SYN_SENT, 10), reply(3, CT_ESTABLISHED, 12)];
        let flows = Flows::of(&entries);
        assert_eq!(flows.iter().count(), 1);
        let flow = flows.iter().next().unwrap();
        assert_eq!(flow.keys().count(), 2);
        assert_eq!((flow.state, flow.last_seen_s), (CT_ESTABLISHED, 12));
    }

    #[test]
    fn on_a_tie_the_entry_read_first_decides() {
        let entries = [original(3, CT_SYN_SENT, 10), reply(3, CT_ESTABLISHED, 10)];
        let flows = Flows::of(&entries);
        assert_eq!(flows.iter().next().unwrap().state, CT_SYN_SENT);
    }

    #[test]
    fn a_key_read_from_both_tables_is_kept_once() {
        let entries = [
            original(3, CT_ESTABLISHED, 10),
            reply(3, CT_ESTABLISHED, 10),
            original(3, CT_ESTABLISHED, 10),
            reply(3, CT_ESTABLISHED, 10),
        ];
        let flows = Flows::of(&entries);
        assert_eq!(flows.iter().next().unwrap().keys().count(), 2);
    }

    #[test]
    fn an_orphan_reply_of_an_earlier_backend_is_a_third_key_of_the_flow() {
        let entries = [
            original(4, CT_ESTABLISHED, 20),
            reply(4, CT_ESTABLISHED, 20),
            reply(3, CT_ESTABLISHED, 5),
        ];
        let flows = Flows::of(&entries);
        let flow = flows.iter().next().unwrap();
        let mut keys: Vec<Ct4Key> = flow.keys().copied().collect();
        keys.sort_unstable();
        let mut expected: Vec<Ct4Key> = entries.iter().map(|(key, _)| *key).collect();
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(flow.backend_id, 4);
    }
}
