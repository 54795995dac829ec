//! What each document of a file held when last parsed, by its text: a
//! rewrite of a file of 10,000 Services that changes one of them parses
//! that one document again and shares the others' objects (parsing is
//! most of a manifest-mode sync: about 1.7 s of CPU for 10,000 Services
//! of 10 endpoints here). Only documents read without any problem are
//! kept, so every problem (its line numbers, its document number) still
//! comes from a fresh read.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, DefaultHasher, Hash as _, Hasher},
    sync::Arc,
};

use k8s_openapi::api::core::v1::Service;

use crate::source::{Slice, Snapshot};

/// A document's text, as two 64-bit hashes (salted apart) and its length:
/// a collision between two texts of one directory is not a real risk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct TextKey(u64, u64, usize);

impl TextKey {
    pub fn of(text: &str) -> TextKey {
        let mut first = DefaultHasher::new();
        text.hash(&mut first);
        let mut second = DefaultHasher::new();
        0x9e37_79b9_7f4a_7c15_u64.hash(&mut second);
        text.hash(&mut second);
        TextKey(first.finish(), second.finish(), text.len())
    }
}

/// A List's objects, or a document's of several.
type Several = (Vec<Arc<Service>>, Vec<Arc<Slice>>);

/// The objects one document gave: most give one, so a clone (each
/// document at each read of its file) copies a pointer, not two lists.
#[derive(Clone, Debug)]
enum Objects {
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
/// the map (SipHash over it again was a tenth of re-reading a file of 10,000
/// Services, one lookup per document).
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

/// The problem-free documents of one version of a file, by text.
#[derive(Debug, Default)]
pub(super) struct DocumentMemo {
    by_text: HashMap<TextKey, Objects, BuildHasherDefault<KeyHasher>>,
}

impl DocumentMemo {
    /// How many documents are remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_text.len()
    }

    /// An empty memo with room for as many documents as `previous` has
    /// (a file's next read has about as many).
    pub fn sized_like(previous: &DocumentMemo) -> DocumentMemo {
        DocumentMemo {
            by_text: HashMap::with_capacity_and_hasher(previous.by_text.len(), Default::default()),
        }
    }

    /// Adds to `set` what the document `key` gave when last read, and
    /// remembers it in `next`; false when it was not remembered.
    pub fn reuse(&self, key: TextKey, set: &mut Snapshot, next: &mut DocumentMemo) -> bool {
        let Some(objects) = self.by_text.get(&key) else {
            return false;
        };
        objects.add_to(set);
        next.by_text.insert(key, objects.clone());
        true
    }

    /// Remembers what a fresh read of document `key` gave, unless the read
    /// had problems.
    pub fn remember(&mut self, key: TextKey, read: &Snapshot) {
        if read.problems.is_empty() {
            (self.by_text).insert(key, Objects::of(&read.services, &read.slices));
        }
    }
}
