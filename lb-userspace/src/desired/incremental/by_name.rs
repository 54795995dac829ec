//! A map by namespace and name that is looked up with borrowed names: the
//! snapshot's grouping and the comparison with the last one allocate
//! nothing per unchanged Service (a sync at 10,000 Services visits every
//! object's name; only the changed ones get owned keys).

use std::{borrow::Borrow, hash::Hash};

// foldhash: looked up per object at every update, and built whole at the
// first (SipHash, std's default, was a good part of a full sync).
use foldhash::HashMap;

pub(super) struct ByName<K, T> {
    namespaces: HashMap<K, HashMap<K, T>>,
    len: usize,
}

impl<K, T> Default for ByName<K, T> {
    fn default() -> Self {
        ByName {
            namespaces: HashMap::default(),
            len: 0,
        }
    }
}

impl<K: Borrow<str> + Hash + Eq, T> ByName<K, T> {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn get(&self, namespace: &str, name: &str) -> Option<&T> {
        self.namespaces.get(namespace)?.get(name)
    }

    pub(super) fn contains(&self, namespace: &str, name: &str) -> bool {
        self.get(namespace, name).is_some()
    }

    /// The entry, created empty if missing.
    pub(super) fn entry(&mut self, namespace: K, name: K) -> &mut T
    where
        T: Default,
    {
        let names = self.namespaces.entry(namespace).or_default();
        let len = &mut self.len;
        names.entry(name).or_insert_with(|| {
            *len += 1;
            T::default()
        })
    }

    pub(super) fn insert(&mut self, namespace: K, name: K, value: T) {
        if self
            .namespaces
            .entry(namespace)
            .or_default()
            .insert(name, value)
            .is_none()
        {
            self.len += 1;
        }
    }

    pub(super) fn remove(&mut self, namespace: &str, name: &str) -> Option<T> {
        let names = self.namespaces.get_mut(namespace)?;
        let removed = names.remove(name)?;
        self.len -= 1;
        if names.is_empty() {
            self.namespaces.remove(namespace);
        }
        Some(removed)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &str, &T)> {
        self.namespaces.iter().flat_map(|(namespace, names)| {
            names
                .iter()
                .map(move |(name, value)| (namespace.borrow(), name.borrow(), value))
        })
    }
}
