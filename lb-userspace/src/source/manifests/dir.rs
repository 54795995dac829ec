//! Reading a directory of manifest files into one snapshot.

use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::mpsc::UnboundedSender;

use super::{
    cache::{FileCache, Lookup},
    limits::Limits,
    parser::{Parsed, Parser},
};
use crate::source::{Snapshot, SourceError};

/// Loads every `*.yaml` / `*.yml` file directly in `dir`, with the default
/// limits and nothing cached (`lb agent --dry-run`, tests).
pub fn load_dir(dir: &Path) -> Result<Snapshot, SourceError> {
    Loader::new(dir, Limits::default()).load()
}

/// Files a writer holds open: their text may be half written, so the
/// version read before stands until the writer closes or renames them.
pub(crate) type HeldFiles = Arc<Mutex<HashSet<PathBuf>>>;

/// A manifest directory and what was read of it.
pub struct Loader {
    dir: PathBuf,
    limits: Limits,
    state: Mutex<State>,
    held: HeldFiles,
}

struct State {
    cache: FileCache,
    parser: Parser,
}

impl Loader {
    /// A loader that parses on the caller's thread (`--dry-run`, tests).
    pub fn new(dir: &Path, limits: Limits) -> Loader {
        Loader::with_parser(dir, limits, HeldFiles::default(), Parser::new(None))
    }

    /// A watched directory's loader: parses run on their own threads and
    /// `wake` is told when one finishes after its load stopped waiting.
    pub(crate) fn watched(
        dir: &Path,
        limits: Limits,
        held: HeldFiles,
        wake: UnboundedSender<()>,
    ) -> Loader {
        Loader::with_parser(dir, limits, held, Parser::new(Some(wake)))
    }

    fn with_parser(dir: &Path, limits: Limits, held: HeldFiles, parser: Parser) -> Loader {
        Loader {
            dir: dir.to_owned(),
            limits,
            state: Mutex::new(State {
                cache: FileCache::default(),
                parser,
            }),
            held,
        }
    }

    #[cfg(test)]
    pub(super) fn with_read(self, read: super::parser::ReadFn) -> Loader {
        let state = self
            .state
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        Loader::with_parser(
            &self.dir,
            self.limits,
            self.held,
            state.parser.with_read(read),
        )
    }

    #[cfg(test)]
    pub(crate) fn held(&self) -> HeldFiles {
        self.held.clone()
    }

    /// Everything in the directory, every file parsed (see [`Loader::load_within`]).
    pub fn load(&self) -> Result<Snapshot, SourceError> {
        self.load_until(None)
    }

    /// Files are read in name order so the result (and which of two
    /// duplicates wins downstream) is the same on every run. Hidden files
    /// and editor leftovers are ignored: an editor's temporary copy must not
    /// double every object while a file is being edited.
    ///
    /// A file whose parse takes longer than `wait` contributes its previous
    /// version (nothing, if it is new) until its parse is done.
    ///
    /// A directory that cannot be listed is an error, not an empty
    /// snapshot; a file that cannot be read is a problem of that file alone.
    pub fn load_within(&self, wait: Duration) -> Result<Snapshot, SourceError> {
        self.load_until(Some(Instant::now() + wait))
    }

    fn load_until(&self, deadline: Option<Instant>) -> Result<Snapshot, SourceError> {
        let files = manifest_files(&self.dir).map_err(|source| SourceError::Unreadable {
            path: self.dir.clone(),
            source,
        })?;
        let held = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let State { cache, parser } = &mut *state;
        let lookups: Vec<_> = files
            .iter()
            .map(|path| {
                let lookup = cache.lookup(path, held.contains(path));
                if let Lookup::Miss(key) = lookup {
                    let memo = cache.memo(path);
                    parser.start(path, &display_name(path), key, &self.limits, memo);
                }
                lookup
            })
            .collect();
        let mut set = Snapshot::default();
        for (path, lookup) in files.iter().zip(lookups) {
            set.extend(match lookup {
                Lookup::Hit(snapshot) => snapshot,
                Lookup::Miss(key) => {
                    let (name, memo) = (display_name(path), cache.memo(path));
                    match parser.finish(path, &name, &self.limits, deadline, &memo) {
                        Parsed::Done(read) => cache.store(path, key, *read),
                        Parsed::Late => cache.stale(path),
                    }
                }
            });
        }
        cache.retain(&files.into_iter().collect());
        Ok(set)
    }

    /// How many files were parsed so far (not answered from the cache).
    pub fn parses(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .parser
            .started
    }
}

/// The manifest files of `dir`, sorted by name. Directories are skipped
/// quietly; anything else by a manifest's name (a FIFO, a broken symlink)
/// is listed, to become a problem of its own.
fn manifest_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        // `metadata` follows symlinks, as ConfigMap mounts are made of them.
        if is_manifest_name(&name) && !fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// `*.yaml` or `*.yml`, not hidden (which also covers emacs' `.#x` locks and
/// vim's `.x.swp`), not a backup (`x~`).
pub(super) fn is_manifest_name(name: &str) -> bool {
    if name.starts_with('.') || name.ends_with('~') || name.starts_with('#') {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml")
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
