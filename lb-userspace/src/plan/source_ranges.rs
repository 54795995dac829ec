//! The source-range trie's writes of a plan (loadBalancerSourceRanges).
//!
//! A frontend with `FE_FLAG_SOURCE_RANGES` drops every source the trie
//! does not hold for its Service port, so the order is what keeps packets
//! whole: a port's new ranges are written before its frontends flip (no
//! packet meets the flag without its ranges) and its old ones removed
//! after (a frontend losing the flag still finds them until it has).
//! While the ranges change under a flagged frontend, a packet meets the
//! old ranges, their union with the new, then the new: never fewer than
//! either.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use lb_common::{Frontend4Key, FrontendValue};

use super::{Applied, Plan};
use crate::{
    datapath::codec::frontend_from_key,
    model::{DesiredState, SourceRange},
};

const FIRST: SourceRange = SourceRange {
    network: Ipv4Addr::UNSPECIFIED,
    prefix_len: 0,
};
const LAST: SourceRange = SourceRange {
    network: Ipv4Addr::BROADCAST,
    prefix_len: 32,
};

/// Which Service port ids a plan settles the ranges of.
pub(super) enum Ports<'a> {
    /// Every one (the whole plan).
    All,
    /// These, and those whose frontends the plan sets or removes (the
    /// scoped plan: its ports' ids as the maps hold them).
    These(&'a BTreeSet<u32>),
}

/// Fills the plan's `set_source_ranges` and `remove_source_ranges` for
/// `ports`, from the desired state and the frontends the plan leaves.
pub(super) fn plan_source_ranges(
    desired: &DesiredState,
    applied: &Applied,
    plan: &mut Plan,
    ports: Ports<'_>,
) {
    let set: BTreeMap<&Frontend4Key, &FrontendValue> =
        plan.set_frontends.iter().map(|(k, v)| (k, v)).collect();
    let removed: BTreeSet<&Frontend4Key> = plan.remove_frontends.iter().collect();
    // sync: the plan's frontends by service id, found once (looking them
    // up per id walked every frontend once per Service port: 100 million
    // steps in a full sync of 10,000).
    let mut set_of: BTreeMap<u32, Vec<&Frontend4Key>> = BTreeMap::new();
    for (key, value) in &set {
        set_of.entry(value.service_id).or_default().push(key);
    }
    let ids = port_ids(applied, plan, ports);
    let mut add = Vec::new();
    let mut remove = Vec::new();
    for id in ids {
        let have: BTreeSet<SourceRange> = applied
            .source_ranges
            .range((id, FIRST)..=(id, LAST))
            .map(|(_, range)| *range)
            .collect();
        let keys = applied
            .index
            .service_frontends
            .get(&id)
            .into_iter()
            .flatten();
        let keys: BTreeSet<&Frontend4Key> = keys
            .chain(set_of.get(&id).into_iter().flatten().copied())
            .collect();
        let mut wanted = BTreeSet::new();
        for key in keys {
            let after = match set.get(key) {
                Some(value) => Some(*value),
                None if removed.contains(key) => None,
                None => applied.frontends.get(key),
            };
            if !after.is_some_and(|v| v.service_id == id && v.has_source_ranges()) {
                continue;
            }
            let ranges = frontend_from_key(key)
                .and_then(|fe| desired.frontends.get(&fe))
                .map(|spec| spec.source_ranges.as_slice())
                .unwrap_or_default();
            if ranges.is_empty() {
                // A frontend kept as it was (its port could not be
                // planned) keeps the ranges it filters with.
                wanted.extend(&have);
            }
            wanted.extend(ranges);
        }
        add.extend(wanted.difference(&have).map(|range| (id, *range)));
        remove.extend(have.difference(&wanted).map(|range| (id, *range)));
    }
    plan.set_source_ranges = add;
    plan.remove_source_ranges = remove;
}

/// The ids whose ranges the plan settles.
fn port_ids(applied: &Applied, plan: &Plan, ports: Ports<'_>) -> BTreeSet<u32> {
    let touched = plan
        .set_frontends
        .iter()
        .map(|(k, _)| k)
        .chain(&plan.remove_frontends)
        .filter_map(|key| applied.frontends.get(key))
        .chain(plan.set_frontends.iter().map(|(_, v)| v))
        .map(|v| v.service_id);
    let mut ids: BTreeSet<u32> = touched.collect();
    match ports {
        Ports::All => {
            ids.extend(applied.source_ranges.iter().map(|(id, _)| *id));
            let flagged = applied.frontends.values().filter(|v| v.has_source_ranges());
            ids.extend(flagged.map(|v| v.service_id));
        }
        Ports::These(these) => ids.extend(these),
    }
    ids
}

#[cfg(test)]
mod tests;
