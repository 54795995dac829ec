//! The two tables. Assured flows (`CT4`) and new flows
//! (`CT4_NEW`) are separate LRU maps, so a flood of new flows evicts only
//! other new flows, never an established connection's entries. A flow's
//! two entries always live in the same table.

use aya_ebpf::{bindings::BPF_NOEXIST, maps::LruHashMap};
use lb_common::{Ct4Key, Ct4Value, reason::Reason};

use crate::maps::{CT4, CT4_NEW};

/// `EEXIST`: what an insert with `BPF_NOEXIST` of a present key returns.
const EEXIST: i32 = 17;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Assured,
    New,
}

#[inline(always)]
pub fn map(table: Table) -> &'static LruHashMap<Ct4Key, Ct4Value> {
    match table {
        Table::Assured => &CT4,
        Table::New => &CT4_NEW,
    }
}

/// The entry at `key` and the table holding it, assured flows first (the
/// most packets belong to them).
#[inline(always)]
pub fn find(key: &Ct4Key) -> Option<(Table, *mut Ct4Value)> {
    if let Some(entry) = CT4.get_ptr_mut(key) {
        return Some((Table::Assured, entry));
    }
    CT4_NEW.get_ptr_mut(key).map(|entry| (Table::New, entry))
}

/// The entry at `key`, looked up in `first` before the other table: a
/// flow's partner entry lives in the same table as the entry hit, so this
/// is one lookup where [`find`] may take two.
#[inline(always)]
pub fn find_from(first: Table, key: &Ct4Key) -> Option<(Table, *mut Ct4Value)> {
    let other = match first {
        Table::Assured => Table::New,
        Table::New => Table::Assured,
    };
    if let Some(entry) = map(first).get_ptr_mut(key) {
        return Some((first, entry));
    }
    map(other).get_ptr_mut(key).map(|entry| (other, entry))
}

pub use super::clock::now_s;

/// Inserts into the table of new flows; a refusal (memory) is a counted drop.
#[inline(always)]
pub fn insert_new(key: &Ct4Key, value: &Ct4Value) -> Result<(), Reason> {
    CT4_NEW
        .insert(key, value, 0)
        .map_err(|_| Reason::DropCtInsertFailed)
}

/// Inserts `key` only if no entry holds it: `Err(true)` when one does.
#[inline(always)]
pub fn insert_absent(table: Table, key: &Ct4Key, value: &Ct4Value) -> Result<(), bool> {
    map(table)
        .insert(key, value, BPF_NOEXIST as u64)
        .map_err(|err| err == -EEXIST)
}

/// Removes `key` from whichever table holds it.
#[inline(always)]
pub fn remove(key: &Ct4Key) {
    let _ = CT4.remove(key);
    let _ = CT4_NEW.remove(key);
}
