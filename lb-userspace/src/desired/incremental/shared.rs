//! Change detection without visiting every object's fields, for snapshots
//! of shared API objects (cluster mode: the reflector stores' `Arc`s). A
//! store replaces an object it changes, so an object still at the address
//! the last snapshot held is unchanged: the pass over the snapshot is one
//! pointer lookup per object, and only the new objects are read (their
//! group, and the object they replace by namespace and name).
//!
//! The tracker holds a clone of every `Arc` it has seen, so an address is
//! never reused for another object while it is remembered. Objects without
//! a uid and resourceVersion (manifests) are not for this path: their
//! order counts (the first duplicate wins), and it is not tracked here.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
    sync::Arc,
};

use k8s_openapi::{api::core::v1::Service, apimachinery::pkg::apis::meta::v1::ObjectMeta};

use super::inputs::{GroupKey, content_hash};
use crate::{desired::meta::namespace_of, source::Slice};

/// Addresses are already well spread: a multiply is hash enough.
#[derive(Default)]
pub(super) struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8 | u64::from(*byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, address: usize) {
        self.0 = (address as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type ByAddress<T> = HashMap<usize, T, BuildHasherDefault<AddressHasher>>;

/// One kind's objects as last seen.
struct Seen<K> {
    objects: ByAddress<(Option<GroupKey>, Arc<K>)>,
    /// Namespace and name to address: what a new object replaces.
    by_name: foldhash::HashMap<(String, String), usize>,
    /// The addresses of each group's objects.
    members: foldhash::HashMap<GroupKey, BTreeSet<usize>>,
}

impl<K> Default for Seen<K> {
    fn default() -> Self {
        Seen {
            objects: ByAddress::default(),
            by_name: foldhash::HashMap::default(),
            members: foldhash::HashMap::default(),
        }
    }
}

fn address<K>(object: &Arc<K>) -> usize {
    Arc::as_ptr(object) as usize
}

pub(super) fn versioned(meta: &ObjectMeta) -> bool {
    meta.uid.is_some() && meta.resource_version.is_some()
}

fn name_of(meta: &ObjectMeta) -> (String, String) {
    let namespace = namespace_of(&meta.namespace).to_owned();
    (namespace, meta.name.clone().unwrap_or_default())
}

impl<K> Seen<K> {
    /// Takes in this snapshot's objects; adds the groups that changed to
    /// `changed`. `None` (nothing taken in) when an object has no version.
    fn update(
        &mut self,
        now: &[Arc<K>],
        meta: impl Fn(&K) -> &ObjectMeta,
        group: impl Fn(&K) -> Option<GroupKey>,
        changed: &mut BTreeSet<GroupKey>,
    ) -> Option<()> {
        let held = self.objects.len();
        let mut fresh = Vec::new();
        let mut kept = 0;
        for object in now {
            if self.objects.contains_key(&address(object)) {
                kept += 1;
            } else if !versioned(meta(object)) {
                return None;
            } else {
                fresh.push(object);
            }
        }
        let mut replaced = 0;
        for object in fresh {
            let name = name_of(meta(object));
            if let Some(old) = self.by_name.remove(&name) {
                replaced += 1;
                self.remove(old, changed);
            }
            let key = group(object);
            if let Some(key) = &key {
                changed.insert(key.clone());
                let members = self.members.entry(key.clone()).or_default();
                members.insert(address(object));
            }
            self.by_name.insert(name, address(object));
            self.objects.insert(address(object), (key, object.clone()));
        }
        if kept + replaced < held {
            self.forget_deleted(now, meta, changed);
        }
        Some(())
    }

    fn remove(&mut self, address: usize, changed: &mut BTreeSet<GroupKey>) {
        let Some((Some(group), _)) = self.objects.remove(&address) else {
            return;
        };
        if let Some(members) = self.members.get_mut(&group) {
            members.remove(&address);
            if members.is_empty() {
                self.members.remove(&group);
            }
        }
        changed.insert(group);
    }

    /// Drops what the snapshot no longer holds (deletions: rarer than
    /// changes, and the only case that visits every object again).
    fn forget_deleted(
        &mut self,
        now: &[Arc<K>],
        meta: impl Fn(&K) -> &ObjectMeta,
        changed: &mut BTreeSet<GroupKey>,
    ) {
        let present: HashSet<usize, BuildHasherDefault<AddressHasher>> =
            now.iter().map(address).collect();
        let gone: Vec<usize> = (self.objects.keys())
            .filter(|a| !present.contains(a))
            .copied()
            .collect();
        for address in gone {
            if let Some((_, object)) = self.objects.get(&address) {
                let name = name_of(meta(object));
                self.by_name.remove(&name);
            }
            self.remove(address, changed);
        }
    }

    /// The objects of `groups`, in address order (API objects have unique
    /// names: their order counts nowhere).
    fn of<'a>(&'a self, groups: &BTreeSet<GroupKey>) -> Vec<&'a K> {
        let addresses = groups.iter().filter_map(|g| self.members.get(g)).flatten();
        addresses
            .filter_map(|address| self.objects.get(address))
            .map(|(_, object)| &**object)
            .collect()
    }
}

/// The objects of the last shared snapshot.
#[derive(Default)]
pub(super) struct SharedObjects {
    services: Seen<Service>,
    slices: Seen<Slice>,
}

fn service_group(service: &Service) -> Option<GroupKey> {
    let (namespace, name) = name_of(&service.metadata);
    Some((namespace, name))
}

fn slice_group(slice: &Slice) -> Option<GroupKey> {
    let meta = &slice.metadata;
    let service = slice.service_name()?;
    Some((namespace_of(&meta.namespace).to_owned(), service.to_owned()))
}

impl SharedObjects {
    /// The groups whose objects changed since the last snapshot, or `None`
    /// when the snapshot is not for this path (then forget this one).
    pub(super) fn changed(
        &mut self,
        services: &[Arc<Service>],
        slices: &[Arc<Slice>],
    ) -> Option<BTreeSet<GroupKey>> {
        let mut changed = BTreeSet::new();
        self.services
            .update(services, |s| &s.metadata, service_group, &mut changed)?;
        self.slices
            .update(slices, |s| &s.metadata, slice_group, &mut changed)?;
        Some(changed)
    }

    /// The services and slices of `groups`, as the last snapshot holds them.
    pub(super) fn objects_of(&self, groups: &BTreeSet<GroupKey>) -> (Vec<&Service>, Vec<&Slice>) {
        (self.services.of(groups), self.slices.of(groups))
    }
}

/// The content hash of each object without an API version (manifests),
/// by address: the manifest cache hands out the same `Arc`s for a file
/// that did not change, so only the objects of changed files are hashed
/// (serialized) again. Holds the `Arc`s, so no address is reused while
/// remembered.
#[derive(Default)]
pub(super) struct ContentMemo {
    services: ByAddress<(Arc<Service>, u64)>,
    slices: ByAddress<(Arc<Slice>, u64)>,
    /// The snapshot's objects in its order (services, slices): what
    /// `replace` compares the next snapshot with, place by place.
    order: (Vec<Place>, Vec<Place>),
}

/// One place of a snapshot: the object's address and a hash of its
/// group's key, so finding a group's objects reads no object but theirs.
#[derive(Clone, Copy)]
pub(super) struct Place {
    pub(super) address: usize,
    pub(super) group: u64,
}

/// The hash [`Place::group`] holds for a group key.
pub(super) fn group_hash(key: Option<(&str, &str)>) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&key, &mut hasher);
    hasher.finish()
}

fn place<K>(object: &Arc<K>, group: impl Fn(&K) -> Option<GroupKey>) -> Place {
    let key = group(object);
    Place {
        address: address(object),
        group: group_hash(key.as_ref().map(|(ns, name)| (ns.as_str(), name.as_str()))),
    }
}

impl ContentMemo {
    /// The memo of this snapshot's objects (others are forgotten).
    pub(super) fn refresh(
        mut self,
        services: &[Arc<Service>],
        slices: &[Arc<Slice>],
    ) -> ContentMemo {
        ContentMemo {
            services: remembered(&mut self.services, services),
            slices: remembered(&mut self.slices, slices),
            order: (
                services.iter().map(|s| place(s, service_group)).collect(),
                slices.iter().map(|s| place(s, slice_group)).collect(),
            ),
        }
    }

    /// Takes in a snapshot that holds the last one's objects in the same
    /// places but for some replaced (a manifest file rewritten with one
    /// document changed: the cache hands out the same `Arc`s for the
    /// others); returns the groups of the objects taken out and put in.
    /// `None` (nothing taken in) when objects were added or removed: their
    /// places moved, and only a whole comparison can tell what changed.
    pub(super) fn replace(
        &mut self,
        services: &[Arc<Service>],
        slices: &[Arc<Slice>],
    ) -> Option<BTreeSet<GroupKey>> {
        if services.len() != self.order.0.len() || slices.len() != self.order.1.len() {
            return None;
        }
        let mut groups = BTreeSet::new();
        replace_kind(
            &mut self.services,
            &mut self.order.0,
            services,
            service_group,
            &mut groups,
        );
        replace_kind(
            &mut self.slices,
            &mut self.order.1,
            slices,
            slice_group,
            &mut groups,
        );
        Some(groups)
    }

    /// The snapshot's places (services, slices), as `replace` left them.
    pub(super) fn places(&self) -> (&[Place], &[Place]) {
        (&self.order.0, &self.order.1)
    }

    /// The content hash of the object at `address`, if known.
    pub(super) fn get(&self, address: usize) -> Option<u64> {
        let service = self.services.get(&address).map(|(_, hash)| *hash);
        service.or_else(|| self.slices.get(&address).map(|(_, hash)| *hash))
    }
}

fn remembered<K: serde::Serialize>(
    old: &mut ByAddress<(Arc<K>, u64)>,
    now: &[Arc<K>],
) -> ByAddress<(Arc<K>, u64)> {
    now.iter()
        .map(|object| {
            let kept = old.remove(&address(object));
            let hash = kept.map_or_else(|| content_hash(&**object), |(_, hash)| hash);
            (address(object), (object.clone(), hash))
        })
        .collect()
}

/// [`ContentMemo::replace`] for one kind: the places whose object changed
/// give their old and new objects' groups; the new objects are hashed, the
/// old ones forgotten unless still in another place (two identical
/// documents share their objects).
fn replace_kind<K: serde::Serialize>(
    memo: &mut ByAddress<(Arc<K>, u64)>,
    order: &mut [Place],
    now: &[Arc<K>],
    group: impl Fn(&K) -> Option<GroupKey>,
    groups: &mut BTreeSet<GroupKey>,
) {
    let mut gone = Vec::new();
    for (held, object) in order.iter_mut().zip(now) {
        if held.address == address(object) {
            continue;
        }
        if let Some((old, _)) = memo.get(&held.address) {
            groups.extend(group(old));
        }
        groups.extend(group(object));
        gone.push(held.address);
        *held = place(object, &group);
        memo.entry(held.address)
            .or_insert_with(|| (object.clone(), content_hash(&**object)));
    }
    if gone.is_empty() {
        return;
    }
    let gone: HashSet<usize, BuildHasherDefault<AddressHasher>> = gone.into_iter().collect();
    let still: HashSet<usize, BuildHasherDefault<AddressHasher>> = (order.iter())
        .map(|p| p.address)
        .filter(|a| gone.contains(a))
        .collect();
    for address in gone.difference(&still) {
        memo.remove(address);
    }
}
