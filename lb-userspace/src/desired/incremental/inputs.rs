//! Change detection: the snapshot's objects grouped by the Service they
//! belong to (namespace and name; a slice by its `kubernetes.io/service-name`
//! label), and one version per group that changes whenever any of its
//! objects does.
//!
//! An object's version is its `metadata.uid` and `metadata.resourceVersion`
//! where both are set (cluster mode: the API server bumps the version at
//! every change, and a deleted and recreated object has a new uid);
//! otherwise (manifest mode) a hash of the whole object, so an edited file
//! is seen whatever its metadata says. A group's version combines its
//! objects' versions: those from the API server in any order (a reflector's
//! store has none, and names are unique there), the others in snapshot
//! order (the order manifest duplicates are resolved in). 64 bits: a
//! collision would miss one change until the next resync rebuilds all.

use std::{
    borrow::Borrow,
    hash::{DefaultHasher, Hash, Hasher},
};

use k8s_openapi::{api::core::v1::Service, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use serde::Serialize;

use super::by_name::ByName;
use crate::{desired::meta::namespace_of, source::Slice};

/// A Service's namespace and name.
pub(crate) type GroupKey = (String, String);

/// The snapshot's objects by the Service they belong to.
pub(super) type Groups<'a> = ByName<&'a str, GroupInputs<'a>>;

/// The objects of one Service, borrowed from the snapshot.
#[derive(Default)]
pub(super) struct GroupInputs<'a> {
    pub(super) services: Vec<&'a Service>,
    pub(super) slices: Vec<&'a Slice>,
    /// Objects without an API version, in order.
    in_order: DefaultHasher,
    /// The sum of the API versions' hashes.
    any_order: u64,
}

impl GroupInputs<'_> {
    pub(super) fn version(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        (self.in_order.finish(), self.any_order).hash(&mut hasher);
        hasher.finish()
    }

    /// Adds one object's version; `content`: its content hash if known.
    fn add(
        &mut self,
        kind: &str,
        meta: &ObjectMeta,
        object: &impl Serialize,
        content: Option<u64>,
    ) {
        match (&meta.uid, &meta.resource_version) {
            (Some(uid), Some(version)) => {
                let mut hasher = DefaultHasher::new();
                (kind, &meta.namespace, &meta.name, uid, version).hash(&mut hasher);
                self.any_order = self.any_order.wrapping_add(hasher.finish());
            }
            _ => {
                (kind, &meta.namespace, &meta.name).hash(&mut self.in_order);
                let content = content.unwrap_or_else(|| content_hash(object));
                content.hash(&mut self.in_order);
            }
        }
    }
}

/// A hash of a whole object (for objects without an API version): its
/// JSON text, hashed once with XXH3. The serializer writes a few bytes at
/// a time, and SipHash (std's default) fed straight from it paid a round
/// per write: at a full sync of 10,000 Services a quarter of the desired
/// state. The text lives only as long as the call.
pub(super) fn content_hash(object: &impl Serialize) -> u64 {
    let mut text = Vec::with_capacity(1024);
    if serde_json::to_writer(&mut text, object).is_err() {
        // Cannot happen for these types; a fresh value each time has the
        // group recomputed rather than trusted.
        let mut hasher = DefaultHasher::new();
        std::time::Instant::now().hash(&mut hasher);
        return hasher.finish();
    }
    xxhash_rust::xxh3::xxh3_64(&text)
}

/// Groups the snapshot's objects. Slices without the service-name label
/// serve nothing and raise no problem in the full computation either, so
/// they belong to no group.
pub(super) fn group<'a>(
    services: &'a [impl Borrow<Service>],
    slices: &'a [impl Borrow<Slice>],
) -> Groups<'a> {
    group_with(services, slices, &|_| None)
}

/// [`group`], with the content hashes already known by object address.
pub(super) fn group_with<'a>(
    services: &'a [impl Borrow<Service>],
    slices: &'a [impl Borrow<Slice>],
    known: &dyn Fn(usize) -> Option<u64>,
) -> Groups<'a> {
    let mut groups = Groups::default();
    for service in services.iter().map(Borrow::borrow) {
        let meta = &service.metadata;
        let name = meta.name.as_deref().unwrap_or_default();
        let group = groups.entry(namespace_of(&meta.namespace), name);
        group.add(
            "Service",
            meta,
            service,
            known(std::ptr::from_ref(service) as usize),
        );
        group.services.push(service);
    }
    for slice in slices.iter().map(Borrow::borrow) {
        let meta = &slice.metadata;
        let Some(name) = slice.service_name() else {
            continue;
        };
        let group = groups.entry(namespace_of(&meta.namespace), name);
        group.add(
            "EndpointSlice",
            meta,
            slice,
            known(std::ptr::from_ref(slice) as usize),
        );
        group.slices.push(slice);
    }
    groups
}
