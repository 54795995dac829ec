//! Id allocation without searching: the free ids of one kind (backends,
//! tables, service ports) kept across plans as an indexed free list, and a
//! plan's own claims on top of it.
//!
//! Ids are handed out lowest first, as before, but the lowest free id is
//! the first of the free list or, when that is empty, the high-water mark:
//! no walk over the ids in use, whatever their number.

use std::collections::BTreeSet;

/// The free ids of one kind, `start` and up: those below `next` that are
/// free, in a set, and every id from `next` on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FreeIds {
    free: BTreeSet<u32>,
    next: u32,
}

impl FreeIds {
    /// Every id from `start` on is free.
    pub(super) fn new(start: u32) -> FreeIds {
        FreeIds {
            free: BTreeSet::new(),
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

    /// Marks `id` used.
    pub(super) fn take(&mut self, id: u32) {
        if id >= self.next {
            self.free.extend(self.next..id);
            self.next = id + 1;
        } else {
            self.free.remove(&id);
        }
    }

    /// Marks `id` free again (ids below the start are never handed out:
    /// the caller never releases one it did not take).
    pub(super) fn release(&mut self, id: u32) {
        if id + 1 == self.next {
            self.next = id;
            // Free ids just below the mark join it.
            while self.next > 0 && self.free.remove(&(self.next - 1)) {
                self.next -= 1;
            }
        } else if id < self.next {
            self.free.insert(id);
        }
    }

    pub(super) fn is_free(&self, id: u32) -> bool {
        id >= self.next || self.free.contains(&id)
    }

    /// The lowest free id at or above `from`.
    fn lowest_from(&self, from: u32) -> u32 {
        self.free
            .range(from..)
            .next()
            .copied()
            .unwrap_or(self.next.max(from))
    }
}

/// One plan's claims on a [`FreeIds`]: the plan is pure, so it takes ids
/// here and `Applied::record` takes them from the free list once applied.
pub(super) struct Claims<'a> {
    base: &'a FreeIds,
    taken: BTreeSet<u32>,
    /// Every free id below it is taken by this plan.
    cursor: u32,
    end: u32,
}

impl<'a> Claims<'a> {
    /// Claims on `base`'s ids below `end`.
    pub(super) fn new(base: &'a FreeIds, end: u32) -> Claims<'a> {
        Claims {
            base,
            taken: BTreeSet::new(),
            cursor: 0,
            end,
        }
    }

    pub(super) fn take_lowest(&mut self) -> Option<u32> {
        loop {
            let id = self.base.lowest_from(self.cursor);
            if id >= self.end {
                return None;
            }
            self.cursor = id + 1;
            if self.taken.insert(id) {
                return Some(id);
            }
        }
    }

    /// Claims a given id (one the maps carry already).
    pub(super) fn insert(&mut self, id: u32) {
        self.taken.insert(id);
    }

    /// Hands back an id this plan claimed.
    pub(super) fn remove(&mut self, id: u32) {
        self.taken.remove(&id);
        self.cursor = self.cursor.min(id);
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
    fn claims_hand_out_the_lowest_free_id_and_take_back_what_is_undone() {
        let base = FreeIds::with_used(1, [1, 2, 4]);
        let mut pool = Claims::new(&base, 7);
        assert_eq!(pool.take_lowest(), Some(3));
        assert_eq!(pool.take_lowest(), Some(5));
        pool.remove(3);
        assert_eq!(
            pool.take_lowest(),
            Some(3),
            "a handed back id is the lowest again"
        );
        assert_eq!(pool.take_lowest(), Some(6));
        assert_eq!(pool.take_lowest(), None, "the range ends at 6");
        pool.remove(5);
        assert_eq!(pool.take_lowest(), Some(5));
    }

    #[test]
    fn released_ids_are_reused_lowest_first_and_the_mark_shrinks() {
        let mut ids = FreeIds::with_used(1, [1, 2, 3, 4]);
        ids.release(2);
        ids.release(4);
        assert!(ids.is_free(2) && ids.is_free(4) && !ids.is_free(3));
        assert_eq!(Claims::new(&ids, 100).take_lowest(), Some(2));
        ids.release(3);
        assert_eq!(ids.next, 2, "3 and 4 rejoined the mark, then 2");
        assert!(ids.free.is_empty());
        ids.take(6);
        assert_eq!(ids.free, [2, 3, 4, 5].into_iter().collect());
        assert!(!ids.is_free(6) && ids.is_free(7));
    }
}
