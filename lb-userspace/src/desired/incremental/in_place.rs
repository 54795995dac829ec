//! Manifest mode's update in proportion to the change. Manifests carry no
//! versions, so `update` visits every object to see which group changed
//! (about 30 ms at 10,000 Services). But the manifest cache hands out the
//! same `Arc`s for every document whose text did not change, so a rewrite
//! of one document leaves every other object at its place in the snapshot:
//! comparing the snapshot's addresses with the last one's, place by place
//! (`ContentMemo::replace`), finds the replaced objects, and only their
//! groups (plus those recomputed at every update anyway) are grouped and
//! compared as `update` would. A snapshot with objects added or removed
//! takes `update`'s path.

use std::{
    collections::{BTreeSet, HashSet},
    sync::Arc,
};

use k8s_openapi::api::core::v1::Service;

use super::{
    GroupKey, Tracker,
    inputs::{self, Groups},
    parts::LazyHolders,
    shared::{Place, group_hash},
};
use crate::{
    desired::{Holders, meta::namespace_of},
    source::Slice,
};

impl Tracker {
    /// Updates for a snapshot whose objects are the last one's but for
    /// those replaced in place; false (nothing done) when objects were
    /// added or removed, or there is no last snapshot to compare with.
    pub(super) fn update_in_place(
        &mut self,
        services: &[Arc<Service>],
        slices: &[Arc<Slice>],
        holders: &dyn Fn() -> Holders,
    ) -> bool {
        let Some(memo) = &mut self.content else {
            return false;
        };
        let Some(replaced) = memo.replace(services, slices) else {
            return false;
        };
        let memo = self.content.take().unwrap_or_default();
        let mut wanted = replaced.clone();
        wanted.extend(self.reads_holders.iter().cloned());
        wanted.extend(self.entangled.iter().cloned());
        let (their_services, their_slices) = objects_of(memo.places(), services, slices, &wanted);
        let inputs = inputs::group_with(&their_services, &their_slices, &|a| memo.get(a));
        let mut changed: BTreeSet<GroupKey> = replaced
            .into_iter()
            .filter(|key| self.version_of(key) != inputs.get(&key.0, &key.1).map(|g| g.version()))
            .collect();
        changed.extend(self.reads_holders.iter().cloned());

        let mut holders = LazyHolders::new(holders);
        let recomputed = self.recompute_changed(&inputs, &changed, &mut holders);
        drop(inputs);
        // Only now is it known which groups are entangled.
        wanted.extend(self.entangled.iter().cloned());
        let (their_services, their_slices) = objects_of(memo.places(), services, slices, &wanted);
        let inputs: Groups<'_> =
            inputs::group_with(&their_services, &their_slices, &|a| memo.get(a));
        let entangled = self.recompute_entangled(&inputs, &mut holders);
        drop(inputs);
        self.finish(recomputed, entangled, false);
        self.content = Some(memo);
        true
    }

    fn version_of(&self, key: &GroupKey) -> Option<u64> {
        self.groups.get(&key.0, &key.1).map(|g| g.version)
    }
}

/// The objects of `groups`, in snapshot order (the order duplicates are
/// resolved in, as `update` groups them), found by the places' group
/// hashes: only the objects whose hash matches are read.
fn objects_of<'a>(
    places: (&[Place], &[Place]),
    services: &'a [Arc<Service>],
    slices: &'a [Arc<Slice>],
    groups: &BTreeSet<GroupKey>,
) -> (Vec<&'a Service>, Vec<&'a Slice>) {
    let keys: HashSet<(&str, &str)> = groups
        .iter()
        .map(|(ns, name)| (ns.as_str(), name.as_str()))
        .collect();
    let hashes: HashSet<u64> = keys.iter().map(|&key| group_hash(Some(key))).collect();
    let at = |places: &[Place]| -> Vec<usize> {
        (places.iter().enumerate())
            .filter(|(_, place)| hashes.contains(&place.group))
            .map(|(i, _)| i)
            .collect()
    };
    let their_services = (at(places.0).into_iter())
        .map(|i| &*services[i])
        .filter(|s| {
            let meta = &s.metadata;
            let name = meta.name.as_deref().unwrap_or_default();
            keys.contains(&(namespace_of(&meta.namespace), name))
        })
        .collect();
    let their_slices = (at(places.1).into_iter())
        .map(|i| &*slices[i])
        .filter(|s| {
            let meta = &s.metadata;
            let label = s.service_name();
            label.is_some_and(|name| keys.contains(&(namespace_of(&meta.namespace), name)))
        })
        .collect();
    (their_services, their_slices)
}
