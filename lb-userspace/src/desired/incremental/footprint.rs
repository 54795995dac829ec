//! What one Service's result could collide on with another's: the
//! frontends it claims, its ClusterIPs and its endpoints' addresses. Two
//! Services whose footprints do not meet cannot change each other's
//! result (conflicts need a shared frontend, captures a ClusterIP that is
//! the other's endpoint address; duplicates share a name and so a group).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::{
    held::{Held, HeldAddrs, Holding},
    inputs::GroupKey,
};
use crate::model::{Frontend, ServicePortName};

/// One group's footprint, from its computation on its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    pub(in crate::desired) claimed: Sorted<Frontend>,
    /// Every ClusterIP of every definition, before duplicates and captures
    /// drop any (a superset is safe: it can only entangle more).
    pub(in crate::desired) cluster_ips: Sorted<IpAddr>,
    pub(in crate::desired) endpoint_addrs: Sorted<IpAddr>,
    /// Two definitions of one namespace/name (manifest mode).
    pub(in crate::desired) several_definitions: bool,
    /// One frontend claimed by two Service ports of the group.
    pub(in crate::desired) claimed_twice: bool,
}

impl Footprint {
    pub(in crate::desired) fn record_claims<'a>(
        &mut self,
        claims: impl Iterator<Item = (Frontend, &'a ServicePortName)>,
    ) {
        let mut owner: BTreeMap<Frontend, &ServicePortName> = BTreeMap::new();
        for (frontend, service) in claims {
            if *owner.entry(frontend).or_insert(service) != service {
                self.claimed_twice = true;
            }
        }
        self.claimed = self
            .claimed
            .iter()
            .copied()
            .chain(owner.into_keys())
            .collect();
    }

    /// Whether the result depends on who serves now ([`Holders`]): only
    /// duplicates, conflicts and captures consult the holders, and on its
    /// own a group meets those only in these three cases.
    ///
    /// [`Holders`]: crate::desired::Holders
    pub(super) fn reads_holders(&self) -> bool {
        self.several_definitions
            || self.claimed_twice
            || !self.cluster_ips.is_disjoint(&self.endpoint_addrs)
    }
}

/// A small set kept as a sorted list: a footprint holds one to a few
/// dozen items, and a `BTreeSet`'s first node has room for eleven (the
/// sets of 10,000 footprints were about 7 MB so).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sorted<T>(Box<[T]>);

impl<T> Default for Sorted<T> {
    fn default() -> Self {
        Sorted(Box::default())
    }
}

impl<T: Ord> FromIterator<T> for Sorted<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        let mut items: Vec<T> = items.into_iter().collect();
        items.sort_unstable();
        items.dedup();
        Sorted(items.into_boxed_slice())
    }
}

impl<T: Ord> Sorted<T> {
    pub(in crate::desired) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    fn is_disjoint(&self, other: &Sorted<T>) -> bool {
        !self.iter().any(|item| other.0.binary_search(item).is_ok())
    }
}

impl<'a, T: Ord> IntoIterator for &'a Sorted<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The footprints of every group, indexed by what they could collide on.
/// Groups are named by small ids in the index (a namespace and name once
/// each, not at each of a group's addresses), and an item held by one
/// group costs no allocation (`held`): at 10,000 Services the index held
/// 50 MB as sets of names, 7 MB as ordered maps of ids, and holds about
/// 2 MB so.
#[derive(Default)]
pub(super) struct Overlaps {
    ids: GroupIds,
    claims: Held<Frontend>,
    cluster_ips: HeldAddrs,
    endpoint_addrs: HeldAddrs,
}

impl Overlaps {
    pub(super) fn insert(&mut self, key: &GroupKey, footprint: &Footprint) {
        let id = self.ids.hold(key);
        add(&mut self.claims, &footprint.claimed, id);
        add(&mut self.cluster_ips, &footprint.cluster_ips, id);
        add(&mut self.endpoint_addrs, &footprint.endpoint_addrs, id);
    }

    pub(super) fn remove(&mut self, key: &GroupKey, footprint: &Footprint) {
        let Some(id) = self.ids.release(key) else {
            return;
        };
        take(&mut self.claims, &footprint.claimed, id);
        take(&mut self.cluster_ips, &footprint.cluster_ips, id);
        take(&mut self.endpoint_addrs, &footprint.endpoint_addrs, id);
    }

    /// The other groups `footprint` meets: a shared frontend claim, a
    /// ClusterIP that is their endpoint address, or an endpoint address
    /// that is their ClusterIP.
    pub(super) fn met_by(&self, key: &GroupKey, footprint: &Footprint) -> BTreeSet<GroupKey> {
        let claims = at(&self.claims, &footprint.claimed);
        let captured = at(&self.endpoint_addrs, &footprint.cluster_ips);
        let capturing = at(&self.cluster_ips, &footprint.endpoint_addrs);
        claims
            .chain(captured)
            .chain(capturing)
            .filter_map(|id| self.ids.key(id))
            .filter(|other| *other != key)
            .cloned()
            .collect()
    }
}

/// Small ids for the groups the index holds, counted by how many
/// footprints of each it holds (a group's is removed before its next one
/// goes in, but the count keeps an id right either way).
#[derive(Default)]
struct GroupIds {
    by_key: foldhash::HashMap<GroupKey, u32>,
    /// By id: the key and its hold count; `None` for a free id.
    keys: Vec<Option<(GroupKey, u32)>>,
    free: Vec<u32>,
}

impl GroupIds {
    fn hold(&mut self, key: &GroupKey) -> u32 {
        if let Some(&id) = self.by_key.get(key) {
            if let Some((_, holds)) = &mut self.keys[id as usize] {
                *holds += 1;
            }
            return id;
        }
        let id = self.free.pop().unwrap_or_else(|| {
            self.keys.push(None);
            (self.keys.len() - 1) as u32
        });
        self.keys[id as usize] = Some((key.clone(), 1));
        self.by_key.insert(key.clone(), id);
        id
    }

    /// The group's id, and frees it when this was its last hold.
    fn release(&mut self, key: &GroupKey) -> Option<u32> {
        let id = *self.by_key.get(key)?;
        let slot = &mut self.keys[id as usize];
        if let Some((_, holds)) = slot {
            *holds -= 1;
            if *holds == 0 {
                *slot = None;
                self.by_key.remove(key);
                self.free.push(id);
            }
        }
        Some(id)
    }

    fn key(&self, id: u32) -> Option<&GroupKey> {
        self.keys.get(id as usize)?.as_ref().map(|(key, _)| key)
    }
}

/// The groups at one item of the index: almost always one.
fn add<T: Ord + Copy>(index: &mut impl Holding<T>, items: &Sorted<T>, id: u32) {
    for item in items {
        index.hold(*item, id);
    }
}

fn take<T: Ord>(index: &mut impl Holding<T>, items: &Sorted<T>, id: u32) {
    for item in items {
        index.release(item, id);
    }
}

fn at<'a, T: Ord>(
    index: &'a impl Holding<T>,
    items: &'a Sorted<T>,
) -> impl Iterator<Item = u32> + 'a {
    items
        .iter()
        .flat_map(|item| index.holders(item).iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> GroupKey {
        ("default".into(), name.into())
    }

    fn at_address(addr: &str) -> Footprint {
        Footprint {
            endpoint_addrs: [addr.parse().unwrap()].into_iter().collect(),
            ..Footprint::default()
        }
    }

    fn capturing(addr: &str) -> Footprint {
        Footprint {
            cluster_ips: [addr.parse().unwrap()].into_iter().collect(),
            ..Footprint::default()
        }
    }

    #[test]
    fn groups_at_one_address_are_met_until_they_leave() {
        let mut overlaps = Overlaps::default();
        overlaps.insert(&key("a"), &at_address("10.0.0.1"));
        overlaps.insert(&key("b"), &at_address("10.0.0.1"));
        let probe = capturing("10.0.0.1");
        assert_eq!(
            overlaps.met_by(&key("c"), &probe),
            BTreeSet::from([key("a"), key("b")])
        );
        overlaps.remove(&key("a"), &at_address("10.0.0.1"));
        assert_eq!(
            overlaps.met_by(&key("c"), &probe),
            BTreeSet::from([key("b")])
        );
        overlaps.remove(&key("b"), &at_address("10.0.0.1"));
        assert!(overlaps.met_by(&key("c"), &probe).is_empty());
        assert!(overlaps.endpoint_addrs.is_empty());
    }

    #[test]
    fn a_freed_id_named_again_never_brings_back_the_old_group() {
        let mut overlaps = Overlaps::default();
        overlaps.insert(&key("old"), &at_address("10.0.0.1"));
        overlaps.remove(&key("old"), &at_address("10.0.0.1"));
        // The new group takes the freed id, at another address.
        overlaps.insert(&key("new"), &at_address("10.0.0.2"));
        assert!(
            overlaps
                .met_by(&key("c"), &capturing("10.0.0.1"))
                .is_empty()
        );
        assert_eq!(
            overlaps.met_by(&key("c"), &capturing("10.0.0.2")),
            BTreeSet::from([key("new")])
        );
        // A group is never met by itself.
        assert!(
            overlaps
                .met_by(&key("new"), &capturing("10.0.0.2"))
                .is_empty()
        );
    }
}
