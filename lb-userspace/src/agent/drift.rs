//! Drift: what the maps hold that the agent did not write, found by the
//! periodic resync comparing a fresh read of the maps with what the agent
//! knows it wrote. The next plan, made from the fresh read, rewrites it;
//! the count is `lb_resync_repaired_entries_total{map}` once that plan is
//! applied. Something else writing the pinned maps (an operator with
//! bpftool, another agent on the same pin directory, a bug) shows here
//! instead of staying until the Service changes.

use std::collections::BTreeMap;

use crate::plan::Applied;

/// Entries found changed, per map (the metrics' `map` label).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drift {
    pub frontends: u64,
    pub backends: u64,
    pub maglev_tables: u64,
    pub services: u64,
}

impl Drift {
    /// `known`: what the agent wrote; `fresh`: what the maps hold now.
    pub fn between(known: &Applied, fresh: &Applied) -> Drift {
        let fresh_tables = fresh.known_tables();
        let maglev_tables = known
            .known_tables()
            .iter()
            .filter(|(id, backends)| fresh_tables.get(id) != Some(backends))
            .count() as u64;
        Drift {
            frontends: differing(&known.frontends, &fresh.frontends),
            backends: differing(&known.backends, &fresh.backends),
            maglev_tables,
            services: differing(&known.service_infos, &fresh.service_infos),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_map().iter().all(|(_, n)| *n == 0)
    }

    /// Each map's count, by the metrics' label.
    pub fn by_map(&self) -> [(&'static str, u64); 4] {
        [
            ("frontends", self.frontends),
            ("backends", self.backends),
            ("maglev_tables", self.maglev_tables),
            ("services", self.services),
        ]
    }
}

/// Keys present on one side only, or with another value.
fn differing<K: Ord, V: PartialEq>(a: &BTreeMap<K, V>, b: &BTreeMap<K, V>) -> u64 {
    let changed_or_gone = a.iter().filter(|(k, v)| b.get(k) != Some(*v)).count();
    let added = b.keys().filter(|k| !a.contains_key(k)).count();
    (changed_or_gone + added) as u64
}
