//! Id allocation without searching: the free ids of one kind (backends,
//! tables, service ports) kept across plans as an indexed free list, and a
//! plan's own claims on top of it.
//!
//! Every operation is O(1) (amortized): the free ids below the high-water
//! mark sit in a stack with each one's position (so any one is taken out
//! by a swap), and an allocation pops a freed id, or takes the mark when
//! none is left: no walk over the ids in use, whatever their number (a
//! million backends).

use std::collections::{HashMap, HashSet};

/// The free ids of one kind, `start` and up: those below `next` that are
/// free, in an indexed stack, and every id from `next` on.
#[derive(Clone, Debug)]
pub(super) struct FreeIds {
    free: Vec<u32>,
    position: HashMap<u32, usize>,
    next: u32,
}

impl FreeIds {
    /// Every id from `start` on is free.
    pub(super) fn new(start: u32) -> FreeIds {
        FreeIds {
            free: Vec::new(),
            position: HashMap::new(),
            next: start,
        }
    }

    /// Every id from `start` on except `used`.
    pub(super) fn with_used(start: u32, used: impl IntoIterator<Item = u32>) -> FreeIds {
        let mut ids = FreeIds::new(start);
        for id in used {
            ids.take(id);
        }
        ids
    }

    fn push(&mut self, id: u32) {
        if !self.position.contains_key(&id) {
            self.position.insert(id, self.free.len());
            self.free.push(id);
        }
    }

    /// Takes `id` out of the stack; whether it was there.
    fn pull(&mut self, id: u32) -> bool {
        let Some(at) = self.position.remove(&id) else {
            return false;
        };
        let last = self.free.pop().expect("an indexed id is in the stack");
        if at < self.free.len() {
            self.free[at] = last;
            self.position.insert(last, at);
        }
        true
    }

    /// Marks `id` used.
    pub(super) fn take(&mut self, id: u32) {
        if id >= self.next {
            for skipped in self.next..id {
                self.push(skipped);
            }
            self.next = id + 1;
        } else {
            self.pull(id);
        }
    }

    /// Marks `id` free again (ids below the start are never handed out:
    /// the caller never releases one it did not take).
    pub(super) fn release(&mut self, id: u32) {
        if id + 1 == self.next {
            self.next = id;
            // Free ids just below the mark join it.
            while self.next > 0 && self.pull(self.next - 1) {
                self.next -= 1;
            }
        } else if id < self.next {
            self.push(id);
        }
    }

    pub(super) fn is_free(&self, id: u32) -> bool {
        id >= self.next || self.position.contains_key(&id)
    }

    /// The free ids below the mark, sorted, and the mark (comparisons in
    /// tests: the stack's order depends on history).
    #[cfg(test)]
    pub(super) fn sorted(&self) -> (Vec<u32>, u32) {
        let mut free = self.free.clone();
        free.sort_unstable();
        (free, self.next)
    }
}

impl PartialEq for FreeIds {
    fn eq(&self, other: &Self) -> bool {
        self.next == other.next
            && self.free.len() == other.free.len()
            && self.free.iter().all(|id| other.position.contains_key(id))
    }
}

impl Eq for FreeIds {}

/// One plan's claims on a [`FreeIds`]: the plan is pure, so it takes ids
/// here and `Applied::record` takes them from the free list once applied.
pub(super) struct Claims<'a> {
    base: &'a FreeIds,
    taken: HashSet<u32>,
    /// Ids this plan handed back (`remove`), handed out again first.
    returned: Vec<u32>,
    /// Entries of the base's stack looked at, from its top.
    scanned: usize,
    /// The next id from the base's mark on.
    fresh: u32,
    end: u32,
}

impl<'a> Claims<'a> {
    /// Claims on `base`'s ids below `end`.
    pub(super) fn new(base: &'a FreeIds, end: u32) -> Claims<'a> {
        Claims {
            base,
            taken: HashSet::new(),
            returned: Vec::new(),
            scanned: 0,
            fresh: base.next,
            end,
        }
    }

    /// A free id: one handed back, else one freed before this plan, else
    /// the next from the mark; `None` when every id below `end` is used.
    pub(super) fn take(&mut self) -> Option<u32> {
        while let Some(id) = self.returned.pop() {
            if self.taken.insert(id) {
                return Some(id);
            }
        }
        let stack = &self.base.free;
        while self.scanned < stack.len() {
            let id = stack[stack.len() - 1 - self.scanned];
            self.scanned += 1;
            if id < self.end && self.taken.insert(id) {
                return Some(id);
            }
        }
        while self.fresh < self.end {
            let id = self.fresh;
            self.fresh += 1;
            if self.taken.insert(id) {
                return Some(id);
            }
        }
        None
    }

    /// Claims a given id (one the maps carry already).
    pub(super) fn insert(&mut self, id: u32) {
        self.taken.insert(id);
    }

    /// Hands back an id this plan claimed.
    pub(super) fn remove(&mut self, id: u32) {
        if self.taken.remove(&id) {
            self.returned.push(id);
        }
    }

    /// Free before this plan.
    pub(super) fn was_free(&self, id: u32) -> bool {
        self.base.is_free(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_hand_out_freed_ids_then_new_ones_and_take_back_what_is_undone() {
        let base = FreeIds::with_used(1, [1, 2, 4]);
        let mut pool = Claims::new(&base, 7);
        assert_eq!(pool.take(), Some(3), "the freed id first");
        assert_eq!(pool.take(), Some(5), "then the mark");
        pool.remove(3);
        assert_eq!(pool.take(), Some(3), "a handed back id again");
        assert_eq!(pool.take(), Some(6));
        assert_eq!(pool.take(), None, "the range ends at 6");
        pool.remove(5);
        assert_eq!(pool.take(), Some(5));
        let mut carried = Claims::new(&base, 7);
        carried.insert(3);
        assert_eq!(carried.take(), Some(5), "a carried id is not handed out");
    }

    #[test]
    fn released_ids_are_reused_before_the_mark_grows_and_the_mark_shrinks() {
        let mut ids = FreeIds::with_used(1, [1, 2, 3, 4]);
        ids.release(2);
        ids.release(4);
        assert!(ids.is_free(2) && ids.is_free(4) && !ids.is_free(3));
        assert_eq!(Claims::new(&ids, 100).take(), Some(2));
        ids.release(3);
        assert_eq!(
            ids.sorted(),
            (vec![], 2),
            "3 and 4 rejoined the mark, then 2"
        );
        ids.take(6);
        assert_eq!(ids.sorted(), (vec![2, 3, 4, 5], 7));
        assert!(!ids.is_free(6) && ids.is_free(7));
        ids.take(3);
        assert_eq!(ids.sorted(), (vec![2, 4, 5], 7), "taken out by a swap");
        assert_eq!(ids, FreeIds::with_used(2, [3, 6]), "the same ids free");
    }

    /// A million ids in use and one freed: the allocation takes it at
    /// once, and a plan's claims walk nothing in use (the stack holds the
    /// free ids only).
    #[test]
    fn a_million_ids_in_use_cost_nothing_to_allocate_past() {
        let mut ids = FreeIds::with_used(1, 1..=1_000_000);
        ids.release(500_000);
        assert_eq!(ids.free.len(), 1);
        let mut pool = Claims::new(&ids, 1_048_577);
        assert_eq!(pool.take(), Some(500_000));
        assert_eq!(pool.scanned, 1);
        assert_eq!(pool.take(), Some(1_000_001));
        let mut full = Claims::new(&ids, 1_000_001);
        assert_eq!(full.take(), Some(500_000));
        assert_eq!(full.take(), None);
    }
}
