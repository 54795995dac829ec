//! Which groups (by id) hold each item of the footprints, as small as its
//! lookups allow: only "who holds this item" is asked, never an order, so
//! a hash table will do, and most items are one group's, so those are a
//! bare id. At 10,000 Services of 10 endpoints the endpoint addresses are
//! 100,000 items: as a `BTreeMap<IpAddr, Members>` (a 17-byte key, a
//! 16-byte value, nodes half full after ascending inserts) they were
//! 6.8 MB of the tracker; an IPv4 address held by one group is here a
//! 4-byte key and a 4-byte id.

use std::{
    collections::hash_map::Entry,
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

// foldhash: a full sync holds 100,000 endpoint addresses, each hashed at
// least once (SipHash, std's default, cost more than the lookups).
use foldhash::HashMap;

/// An index of the groups holding each item.
pub(super) trait Holding<T> {
    /// Records that group `id` holds `item` (once, however often told).
    fn hold(&mut self, item: T, id: u32);
    /// Forgets that group `id` holds `item`.
    fn release(&mut self, item: &T, id: u32);
    /// The groups holding `item`, sorted.
    fn holders(&self, item: &T) -> &[u32];
}

/// Items of one type: an item is in `one` or in `many`, never both.
pub(super) struct Held<K> {
    one: HashMap<K, u32>,
    /// Items held by two groups or more, their ids sorted.
    many: HashMap<K, Box<[u32]>>,
}

impl<K> Default for Held<K> {
    fn default() -> Self {
        Held {
            one: HashMap::default(),
            many: HashMap::default(),
        }
    }
}

#[cfg(test)]
impl<K> Held<K> {
    pub(super) fn is_empty(&self) -> bool {
        self.one.is_empty() && self.many.is_empty()
    }
}

impl<K: Hash + Eq> Holding<K> for Held<K> {
    fn hold(&mut self, item: K, id: u32) {
        if let Some(ids) = self.many.get_mut(&item) {
            if let Err(at) = ids.binary_search(&id) {
                let mut grown = std::mem::take(ids).into_vec();
                grown.insert(at, id);
                *ids = grown.into_boxed_slice();
            }
            return;
        }
        match self.one.entry(item) {
            Entry::Vacant(vacant) => {
                vacant.insert(id);
            }
            Entry::Occupied(occupied) if *occupied.get() == id => {}
            Entry::Occupied(occupied) => {
                let (item, other) = occupied.remove_entry();
                let ids = Box::new([other.min(id), other.max(id)]);
                self.many.insert(item, ids);
            }
        }
    }

    fn release(&mut self, item: &K, id: u32) {
        if self.one.get(item) == Some(&id) {
            self.one.remove(item);
            return;
        }
        let Some(ids) = self.many.get_mut(item) else {
            return;
        };
        if let Ok(at) = ids.binary_search(&id) {
            let mut shrunk = std::mem::take(ids).into_vec();
            shrunk.remove(at);
            *ids = shrunk.into_boxed_slice();
        }
        if let [last] = ids[..]
            && let Some((item, _)) = self.many.remove_entry(item)
        {
            self.one.insert(item, last);
        }
    }

    fn holders(&self, item: &K) -> &[u32] {
        if let Some(one) = self.one.get(item) {
            return std::slice::from_ref(one);
        }
        self.many.get(item).map_or(&[], |ids| ids)
    }
}

/// Addresses, each family in its own index: an IPv4 key is 4 bytes, not
/// `IpAddr`'s 17.
#[derive(Default)]
pub(super) struct HeldAddrs {
    v4: Held<Ipv4Addr>,
    v6: Held<Ipv6Addr>,
}

#[cfg(test)]
impl HeldAddrs {
    pub(super) fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

impl Holding<IpAddr> for HeldAddrs {
    fn hold(&mut self, item: IpAddr, id: u32) {
        match item {
            IpAddr::V4(addr) => self.v4.hold(addr, id),
            IpAddr::V6(addr) => self.v6.hold(addr, id),
        }
    }

    fn release(&mut self, item: &IpAddr, id: u32) {
        match item {
            IpAddr::V4(addr) => self.v4.release(addr, id),
            IpAddr::V6(addr) => self.v6.release(addr, id),
        }
    }

    fn holders(&self, item: &IpAddr) -> &[u32] {
        match item {
            IpAddr::V4(addr) => self.v4.holders(addr),
            IpAddr::V6(addr) => self.v6.holders(addr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An item goes from one holder to several and back, its ids sorted
    /// and each once; released by all, it is gone.
    #[test]
    fn an_item_is_held_by_one_then_many_then_none() {
        let mut held = Held::<&str>::default();
        held.hold("a", 7);
        held.hold("a", 7);
        assert_eq!(held.holders(&"a"), [7]);
        held.hold("a", 3);
        held.hold("a", 9);
        held.hold("a", 3);
        assert_eq!(held.holders(&"a"), [3, 7, 9]);
        held.release(&"a", 7);
        held.release(&"a", 5);
        assert_eq!(held.holders(&"a"), [3, 9]);
        held.release(&"a", 9);
        assert_eq!(held.holders(&"a"), [3]);
        assert!(held.many.is_empty(), "one holder is a bare id again");
        held.release(&"a", 4);
        assert_eq!(held.holders(&"a"), [3], "another id releases nothing");
        held.release(&"a", 3);
        assert!(held.holders(&"a").is_empty());
        assert!(held.is_empty());
    }

    /// The two families never meet: the IPv4 address and the IPv6 one
    /// that maps it are different items.
    #[test]
    fn addresses_are_indexed_by_family() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let mut held = HeldAddrs::default();
        held.hold(v4, 1);
        held.hold(mapped, 2);
        assert_eq!(held.holders(&v4), [1]);
        assert_eq!(held.holders(&mapped), [2]);
        held.release(&v4, 1);
        assert!(held.holders(&v4).is_empty());
        assert!(!held.is_empty());
        held.release(&mapped, 2);
        assert!(held.is_empty());
    }

    /// The point of the form: an IPv4 address held by one group is 8
    /// bytes in its table.
    #[test]
    fn an_ipv4_item_of_one_group_is_eight_bytes() {
        assert_eq!(std::mem::size_of::<(Ipv4Addr, u32)>(), 8);
    }
}
