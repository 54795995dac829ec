//! What one Service's result could collide on with another's: the
//! frontends it claims, its ClusterIPs and its endpoints' addresses. Two
//! Services whose footprints do not meet cannot change each other's
//! result (conflicts need a shared frontend, captures a ClusterIP that is
//! the other's endpoint address; duplicates share a name and so a group).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::inputs::GroupKey;
use crate::model::{Frontend, ServicePortName};

/// One group's footprint, from its computation on its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    pub(in crate::desired) claimed: BTreeSet<Frontend>,
    /// Every ClusterIP of every definition, before duplicates and captures
    /// drop any (a superset is safe: it can only entangle more).
    pub(in crate::desired) cluster_ips: BTreeSet<IpAddr>,
    pub(in crate::desired) endpoint_addrs: BTreeSet<IpAddr>,
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
            self.claimed.insert(frontend);
            if *owner.entry(frontend).or_insert(service) != service {
                self.claimed_twice = true;
            }
        }
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

/// The footprints of every group, indexed by what they could collide on.
#[derive(Default)]
pub(super) struct Overlaps {
    claims: BTreeMap<Frontend, BTreeSet<GroupKey>>,
    cluster_ips: BTreeMap<IpAddr, BTreeSet<GroupKey>>,
    endpoint_addrs: BTreeMap<IpAddr, BTreeSet<GroupKey>>,
}

impl Overlaps {
    pub(super) fn insert(&mut self, key: &GroupKey, footprint: &Footprint) {
        add(&mut self.claims, &footprint.claimed, key);
        add(&mut self.cluster_ips, &footprint.cluster_ips, key);
        add(&mut self.endpoint_addrs, &footprint.endpoint_addrs, key);
    }

    pub(super) fn remove(&mut self, key: &GroupKey, footprint: &Footprint) {
        take(&mut self.claims, &footprint.claimed, key);
        take(&mut self.cluster_ips, &footprint.cluster_ips, key);
        take(&mut self.endpoint_addrs, &footprint.endpoint_addrs, key);
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
            .filter(|other| *other != key)
            .cloned()
            .collect()
    }
}

fn add<T: Ord + Copy>(
    index: &mut BTreeMap<T, BTreeSet<GroupKey>>,
    items: &BTreeSet<T>,
    key: &GroupKey,
) {
    for item in items {
        index.entry(*item).or_default().insert(key.clone());
    }
}

fn take<T: Ord + Copy>(
    index: &mut BTreeMap<T, BTreeSet<GroupKey>>,
    items: &BTreeSet<T>,
    key: &GroupKey,
) {
    for item in items {
        if let Some(keys) = index.get_mut(item) {
            keys.remove(key);
            if keys.is_empty() {
                index.remove(item);
            }
        }
    }
}

fn at<'a, T: Ord>(
    index: &'a BTreeMap<T, BTreeSet<GroupKey>>,
    items: &'a BTreeSet<T>,
) -> impl Iterator<Item = &'a GroupKey> {
    items.iter().filter_map(|item| index.get(item)).flatten()
}
