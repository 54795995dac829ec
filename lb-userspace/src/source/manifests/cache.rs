//! What each manifest file held when last read, so an unchanged file is
//! not parsed again at each resync, and a file that stops parsing keeps
//! serving its last good version.

use std::{
    collections::{HashMap, HashSet},
    fs::Metadata,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    file::{FileRead, unusable},
    memo::DocumentMemo,
};
use crate::source::Snapshot;

/// Which version of a file was read: a rewrite changes the inode (rename
/// into place) or the size or mtime (in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

impl FileKey {
    pub fn of(meta: &Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }
    }
}

struct Entry {
    /// None when the file could not even be stat'ed.
    key: Option<FileKey>,
    /// What the file contributes now.
    yields: Arc<Snapshot>,
    /// The last read with no file-level problem (shared with `yields`
    /// when that is it: a large file is held once, not twice).
    last_good: Option<Arc<Snapshot>>,
    /// The documents of the last read, for the next read of the file.
    memo: Arc<DocumentMemo>,
}

/// Per-file memo of reads.
#[derive(Default)]
pub(super) struct FileCache {
    entries: HashMap<PathBuf, Entry>,
}

/// What the cache knows of a file's current version.
pub(super) enum Lookup {
    /// Read before: what it contributes.
    Hit(Snapshot),
    /// To be read; the version found (none: cannot stat, a problem to read).
    Miss(Option<FileKey>),
}

impl FileCache {
    /// What `path` contributes, when its version is the one read last, or
    /// when `held` (a writer has it open: its current text may be half
    /// written, the version read before stands).
    pub fn lookup(&self, path: &Path, held: bool) -> Lookup {
        let entry = self.entries.get(path);
        if held && let Some(entry) = entry {
            return Lookup::Hit(Snapshot::clone(&entry.yields));
        }
        let key = std::fs::metadata(path).ok().map(|m| FileKey::of(&m));
        match entry {
            Some(entry) if key.is_some() && entry.key == key => {
                Lookup::Hit(Snapshot::clone(&entry.yields))
            }
            _ => Lookup::Miss(key),
        }
    }

    /// The documents the last read of `path` remembers (none, if never read).
    pub fn memo(&self, path: &Path) -> Arc<DocumentMemo> {
        self.entries
            .get(path)
            .map(|e| e.memo.clone())
            .unwrap_or_default()
    }

    /// Files a new read of `path` (of version `key`); returns what the file
    /// contributes now.
    pub fn store(&mut self, path: &Path, key: Option<FileKey>, read: FileRead) -> Snapshot {
        let previous = self.entries.remove(path).and_then(|e| e.last_good);
        let mut entry = settle(read.snapshot, previous, key);
        entry.memo = Arc::new(read.memo);
        let yields = Snapshot::clone(&entry.yields);
        self.entries.insert(path.to_owned(), entry);
        yields
    }

    /// What `path` contributed last (nothing, if never read): for a file
    /// whose new version is still being parsed.
    pub fn stale(&self, path: &Path) -> Snapshot {
        self.entries
            .get(path)
            .map(|e| Snapshot::clone(&e.yields))
            .unwrap_or_default()
    }

    /// Forgets the files that are gone, so a file that comes back is read.
    pub fn retain(&mut self, present: &HashSet<PathBuf>) {
        self.entries.retain(|path, _| present.contains(path));
    }
}

/// A good read replaces the last good one; a bad read reports its problems
/// but serves the objects of the last good one, when there is one.
fn settle(read: Snapshot, last_good: Option<Arc<Snapshot>>, key: Option<FileKey>) -> Entry {
    if !read.problems.iter().any(|p| unusable(p.code)) {
        let read = Arc::new(read);
        return Entry {
            key,
            yields: read.clone(),
            last_good: Some(read),
            memo: Arc::default(),
        };
    }
    let Some(good) = last_good else {
        return Entry {
            key,
            yields: Arc::new(read),
            last_good: None,
            memo: Arc::default(),
        };
    };
    let mut yields = Snapshot {
        services: good.services.clone(),
        slices: good.slices.clone(),
        problems: Vec::new(),
        files: good.files.clone(),
        ..Snapshot::default()
    };
    for mut problem in read.problems {
        if unusable(problem.code) {
            problem
                .reason
                .push_str("; serving the file's last good version until it is fixed");
        }
        let file = read.files.file_of(&problem.object).unwrap_or_default();
        (yields.files).record(file, &[], &[], [problem.object.clone()]);
        yields.problems.push(problem);
    }
    Entry {
        key,
        yields: Arc::new(yields),
        last_good: Some(good),
        memo: Arc::default(),
    }
}
