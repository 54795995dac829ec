//! A reflector's store, of the objects as lb keeps them: kube-rs's store
//! holds the decoded objects themselves, and at 10,000 Services of 10
//! endpoints k8s-openapi's EndpointSlices were most of the agent's memory.
//! The watcher's events are applied here as kube-rs's store writer applies
//! them: a relist fills a buffer that replaces the store whole when the
//! list is complete (so a deletion missed while disconnected is applied,
//! and the store is never half listed), a change replaces one object, a
//! deletion removes it. Objects are keyed by namespace and name.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
};

use kube::{Resource, ResourceExt, runtime::watcher::Event};

type Key = (String, String);

/// The objects of one kind, shared by the reflector's task and the
/// snapshots.
pub struct Store<T> {
    state: Arc<RwLock<State<T>>>,
}

impl<T> Clone for Store<T> {
    fn clone(&self) -> Self {
        Store {
            state: self.state.clone(),
        }
    }
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Store {
            state: Arc::new(RwLock::new(State {
                objects: HashMap::new(),
                relist: HashMap::new(),
            })),
        }
    }
}

struct State<T> {
    objects: HashMap<Key, Arc<T>>,
    /// The list being received (the store until it is complete).
    relist: HashMap<Key, Arc<T>>,
}

impl<T> Store<T> {
    /// Every object, in no particular order.
    pub fn state(&self) -> Vec<Arc<T>> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state.objects.values().cloned().collect()
    }

    /// The first object `matches` accepts.
    pub fn find(&self, matches: impl Fn(&T) -> bool) -> Option<Arc<T>> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state.objects.values().find(|o| matches(o)).cloned()
    }

    /// Applies one watcher event; `keep` makes the kept form of an object
    /// (outside the lock).
    pub fn apply<K: Resource>(&self, event: Event<K>, keep: impl Fn(K) -> T) {
        let kept = |object: K| {
            let key = (object.namespace().unwrap_or_default(), object.name_any());
            (key, Arc::new(keep(object)))
        };
        match event {
            Event::Init => self.write().relist.clear(),
            Event::InitApply(object) => {
                let (key, object) = kept(object);
                self.write().relist.insert(key, object);
            }
            Event::InitDone => {
                let mut state = self.write();
                state.objects = std::mem::take(&mut state.relist);
            }
            Event::Apply(object) => {
                let (key, object) = kept(object);
                self.write().objects.insert(key, object);
            }
            Event::Delete(object) => {
                let key = (object.namespace().unwrap_or_default(), object.name_any());
                self.write().objects.remove(&key);
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State<T>> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Node;

    use super::*;

    fn node(name: &str, version: &str) -> Node {
        let mut node = Node::default();
        node.metadata.name = Some(name.into());
        node.metadata.resource_version = Some(version.into());
        node
    }

    fn versions(store: &Store<Node>) -> Vec<(String, String)> {
        let mut all: Vec<_> = store
            .state()
            .iter()
            .map(|n| (n.name_any(), n.resource_version().unwrap_or_default()))
            .collect();
        all.sort();
        all
    }

    fn pair(name: &str, version: &str) -> (String, String) {
        (name.into(), version.into())
    }

    /// client-go's reflector semantics (kube-rs's store writer): a relist
    /// replaces the store only once complete, so an object deleted while
    /// the watch was down is gone after it, and the old list serves until
    /// then.
    #[test]
    fn a_relist_replaces_the_store_when_complete() {
        let store = Store::<Node>::default();
        let keep = |n: Node| n;
        store.apply(Event::Init, keep);
        store.apply(Event::InitApply(node("a", "1")), keep);
        store.apply(Event::InitApply(node("b", "1")), keep);
        assert!(
            versions(&store).is_empty(),
            "served before the list completed"
        );
        store.apply(Event::InitDone, keep);
        assert_eq!(versions(&store), [pair("a", "1"), pair("b", "1")]);
        store.apply(Event::Apply(node("a", "2")), keep);
        store.apply(Event::Delete(node("b", "1")), keep);
        assert_eq!(versions(&store), [pair("a", "2")]);
        store.apply(Event::Init, keep);
        store.apply(Event::InitApply(node("c", "5")), keep);
        assert_eq!(
            versions(&store),
            [pair("a", "2")],
            "the old list serves meanwhile"
        );
        store.apply(Event::InitDone, keep);
        assert_eq!(versions(&store), [pair("c", "5")]);
        assert!(store.find(|n| n.name_any() == "c").is_some());
    }
}
