//! What each document of a file held when last parsed, by its text: a
//! rewrite of a file of 10,000 Services that changes one of them parses
//! that one document again and shares the others' objects (parsing is
//! most of a manifest-mode sync: about 1.7 s of CPU for 10,000 Services
//! of 10 endpoints here). Only documents read without any problem are
//! reused, so every problem (its line numbers, its document number) still
//! comes from a fresh read.
//!
//! The memo keeps the documents in the file's order, so a document is
//! first looked for where it was (the place of the documents after it
//! moves with those added or removed before it): a change of one document
//! costs one comparison of keys for each other document, and a table of
//! the previous read's documents is made only when one is found out of
//! place.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    sync::Arc,
};

use k8s_openapi::api::core::v1::Service;

use super::spans::Span;
use crate::source::{Slice, Snapshot};

/// A document's text, as a 128-bit XXH3 hash (two words) and its length:
/// a collision between two texts of one directory is not a real risk (one
/// could be made on purpose only by whoever may write the manifests, who
/// may define any Service anyway). XXH3 hashes a file of 10,000 Services in
/// half a millisecond, where SipHash took four.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct TextKey(u64, u64, usize);

impl TextKey {
    pub fn of(text: &str) -> TextKey {
        TextKey::of_bytes(text.as_bytes())
    }

    pub fn of_bytes(bytes: &[u8]) -> TextKey {
        let hash = xxhash_rust::xxh3::xxh3_128(bytes);
        TextKey(hash as u64, (hash >> 64) as u64, bytes.len())
    }

    /// The length of the text.
    pub fn len(self) -> usize {
        self.2
    }
}

/// A List's objects, or a document's of several.
type Several = (Vec<Arc<Service>>, Vec<Arc<Slice>>);

/// The objects one document gave: most give one, so a clone (each
/// document at each read of its file) copies a pointer, not two lists.
#[derive(Clone, Debug)]
pub(super) enum Objects {
    None,
    Service(Arc<Service>),
    Slice(Arc<Slice>),
    /// A List, or a document of several objects.
    Many(Arc<Several>),
}

impl Objects {
    fn of(services: &[Arc<Service>], slices: &[Arc<Slice>]) -> Objects {
        match (services, slices) {
            ([], []) => Objects::None,
            ([service], []) => Objects::Service(service.clone()),
            ([], [slice]) => Objects::Slice(slice.clone()),
            _ => Objects::Many(Arc::new((services.to_vec(), slices.to_vec()))),
        }
    }

    fn add_to(&self, set: &mut Snapshot) {
        match self {
            Objects::None => {}
            Objects::Service(service) => set.services.push(service.clone()),
            Objects::Slice(slice) => set.slices.push(slice.clone()),
            Objects::Many(many) => {
                set.services.extend(many.0.iter().cloned());
                set.slices.extend(many.1.iter().cloned());
            }
        }
    }
}

/// A [`TextKey`] is a hash already: its words, mixed, are hash enough for
/// the table of documents out of place.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8 | u64::from(*byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = self.0.rotate_left(17) ^ word;
    }

    fn write_usize(&mut self, length: usize) {
        self.write_u64(length as u64);
    }
}

/// The documents of one version of a file, in its order: each one's key,
/// and its objects when it was read without any problem; and the spans
/// the file was cut into.
#[derive(Debug, Default)]
pub(super) struct DocumentMemo {
    documents: Vec<(TextKey, Option<Objects>)>,
    spans: Vec<Span>,
}

impl DocumentMemo {
    /// How many documents can be reused (those read without a problem).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.documents.iter().filter(|d| d.1.is_some()).count()
    }

    /// A memo of a file cut into `spans`, with room for `documents`.
    pub fn with_spans(documents: usize, spans: Vec<Span>) -> DocumentMemo {
        DocumentMemo {
            documents: Vec::with_capacity(documents),
            spans,
        }
    }

    /// The spans the file was cut into.
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// What document `at` gave, when it was read without a problem.
    pub fn objects(&self, at: usize) -> Option<&Objects> {
        self.documents.get(at).and_then(|d| d.1.as_ref())
    }

    /// A search of this memo for the documents of a new read.
    pub fn finder(&self) -> Finder<'_> {
        Finder {
            previous: self,
            shift: 0,
            index: None,
            #[cfg(test)]
            looked_up: 0,
        }
    }

    /// Adds to `set` the `objects` a document `key` gave when last read,
    /// and remembers them for the next read.
    pub fn reuse(&mut self, key: TextKey, objects: &Objects, set: &mut Snapshot) {
        objects.add_to(set);
        self.documents.push((key, Some(objects.clone())));
    }

    /// Remembers what a fresh read of document `key` gave: its objects,
    /// unless the read had problems.
    pub fn remember(&mut self, key: TextKey, read: &Snapshot) {
        let objects = (read.problems.is_empty()).then(|| Objects::of(&read.services, &read.slices));
        self.documents.push((key, objects));
    }

    fn key_at(&self, at: Option<usize>) -> Option<TextKey> {
        at.and_then(|at| self.documents.get(at)).map(|d| d.0)
    }
}

/// Looks up the documents of a new read, in order, in the previous read.
pub(super) struct Finder<'m> {
    previous: &'m DocumentMemo,
    /// Where the previous read had the new read's document `i`: at
    /// `i + shift` (documents added or removed before it move it).
    shift: isize,
    /// Key to place in the previous read (the first place, for a text
    /// found twice), made at the first document found out of place.
    index: Option<HashMap<TextKey, usize, BuildHasherDefault<KeyHasher>>>,
    /// Documents looked up in the table (tests hold the search to the
    /// documents out of place).
    #[cfg(test)]
    pub looked_up: usize,
}

impl<'m> Finder<'m> {
    /// What the new read's document `i` (of the new read's `keys`) gave
    /// when last read; none when it must be read (new, changed, or read
    /// with problems last time).
    pub fn find(&mut self, i: usize, keys: &[TextKey]) -> Option<&'m Objects> {
        let expected = i.checked_add_signed(self.shift);
        let at = if self.previous.key_at(expected) == Some(keys[i]) {
            expected?
        } else if self.index.is_none() && self.changed_in_place(i, expected, keys) {
            return None;
        } else {
            #[cfg(test)]
            {
                self.looked_up += 1;
            }
            let at = *self.index().get(&keys[i])?;
            self.shift = at as isize - i as isize;
            at
        };
        self.previous.documents[at].1.as_ref()
    }

    /// The document expected at `expected` changed, and no document was
    /// added or removed there: the next one is where it is expected (or
    /// both reads end here). Then no table is worth making (once one is
    /// made, it is asked anyway).
    fn changed_in_place(&self, i: usize, expected: Option<usize>, keys: &[TextKey]) -> bool {
        let Some(expected) = expected.filter(|&at| at < self.previous.documents.len()) else {
            return false;
        };
        match keys.get(i + 1) {
            Some(next) => self.previous.key_at(Some(expected + 1)) == Some(*next),
            None => expected + 1 == self.previous.documents.len(),
        }
    }

    fn index(&mut self) -> &HashMap<TextKey, usize, BuildHasherDefault<KeyHasher>> {
        let documents = &self.previous.documents;
        self.index.get_or_insert_with(|| {
            let mut index = HashMap::with_capacity_and_hasher(documents.len(), Default::default());
            for (at, (key, _)) in documents.iter().enumerate() {
                index.entry(*key).or_insert(at);
            }
            index
        })
    }
}
