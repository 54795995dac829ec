//! Standalone mode's source: a directory of manifests (no API server), also
//! read by `lb agent --dry-run`.
//!
//! `dir` lists the files, `cache` remembers what each held (and its last
//! good version), `file` reads one within its `limits`, `text` reads it by
//! range, `documents` cuts a text into YAML documents, `spans` cuts a file
//! read again reusing its last read's cuts, `stream` reuses or parses each
//! document, `memo` remembers what each
//! gave, `parse` finds the Services and EndpointSlices in one, `yaml` is
//! the YAML reader itself.
mod cache;
mod dir;
mod documents;
#[cfg(test)]
mod documents_tests;
mod file;
mod kinds;
mod limits;
mod memo;
#[cfg(test)]
mod memo_tests;
#[cfg(test)]
mod one_scan_tests;
mod parse;
mod parser;
#[cfg(test)]
mod robustness_tests;
mod spans;
#[cfg(test)]
mod spans_tests;
mod stream;
#[cfg(test)]
mod tests;
mod text;
#[cfg(test)]
mod text_tests;
mod yaml;

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

pub(crate) use dir::HeldFiles;
pub use dir::{Loader, load_dir};
pub use limits::Limits;
pub use parse::DEFAULT_NAMESPACE;
pub use stream::{parse_documents, parse_documents_with};

use super::{
    Snapshot, Source, SourceError,
    watch::{DirWatcher, WatchError},
};

/// What a set of manifests holds: the name this module's callers (and the
/// desired-state tests) know a [`Snapshot`] by.
pub type ManifestSet = Snapshot;

/// How long a sync waits for a changed file's parse before it goes on
/// with that file's previous version (the file is applied when done).
const PARSE_WAIT: Duration = Duration::from_millis(500);

/// A manifest directory, watched for changes.
pub struct ManifestDir {
    loader: Arc<Loader>,
    watcher: DirWatcher,
    /// The first snapshot waits for every file: at start-up a file's
    /// "previous version" is none, and serving none would delete its
    /// Services from the pinned datapath.
    started: Arc<AtomicBool>,
}

impl ManifestDir {
    /// Starts watching `path` with the default limits.
    pub fn watch(path: &Path) -> Result<ManifestDir, WatchError> {
        ManifestDir::watch_with(path, Limits::default())
    }

    /// Starts watching `path`. The directory must exist now: a watch on a
    /// missing directory would never report its creation.
    pub fn watch_with(path: &Path, limits: Limits) -> Result<ManifestDir, WatchError> {
        let held = HeldFiles::default();
        let watcher = DirWatcher::new(path, held.clone())?;
        let loader = Loader::watched(path, limits, held, watcher.waker());
        Ok(ManifestDir {
            loader: Arc::new(loader),
            watcher,
            started: Arc::default(),
        })
    }

    /// The reader behind the watch (tests count its parses).
    pub fn loader(&self) -> &Loader {
        &self.loader
    }
}

impl Source for ManifestDir {
    /// Parsing runs on a blocking thread: however long a file takes, the
    /// agent's runtime (its signals, its metrics endpoint) goes on.
    fn snapshot(&self) -> impl Future<Output = Result<Snapshot, SourceError>> + Send {
        let (loader, started) = (self.loader.clone(), self.started.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                if started.swap(true, Ordering::SeqCst) {
                    loader.load_within(PARSE_WAIT)
                } else {
                    loader.load()
                }
            })
            .await
            .unwrap_or_else(|err| Err(SourceError::Failed(err.to_string())))
        }
    }

    async fn changed(&mut self) {
        self.watcher.changed().await;
    }
}
