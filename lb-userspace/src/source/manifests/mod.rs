//! Standalone mode's source: a directory of manifests (no API server), also
//! read by `lb agent --dry-run`.
//!
//! `dir` lists and reads the files, `documents` cuts a file into YAML
//! documents, `parse` finds the Services and EndpointSlices in them, `yaml`
//! is the YAML reader itself.
mod dir;
mod documents;
mod parse;
#[cfg(test)]
mod tests;
mod yaml;

use std::path::{Path, PathBuf};

pub use dir::load_dir;
pub use parse::{DEFAULT_NAMESPACE, parse_documents};

use super::{
    Snapshot, Source, SourceError,
    watch::{DirWatcher, WatchError},
};

/// What a set of manifests holds: the name this module's callers (and the
/// desired-state tests) know a [`Snapshot`] by.
pub type ManifestSet = Snapshot;

/// A manifest directory, watched for changes.
pub struct ManifestDir {
    path: PathBuf,
    watcher: DirWatcher,
}

impl ManifestDir {
    /// Starts watching `path`. The directory must exist now: a watch on a
    /// missing directory would never report its creation.
    pub fn watch(path: &Path) -> Result<ManifestDir, WatchError> {
        Ok(ManifestDir {
            path: path.to_owned(),
            watcher: DirWatcher::new(path)?,
        })
    }
}

impl Source for ManifestDir {
    fn snapshot(&self) -> Result<Snapshot, SourceError> {
        load_dir(&self.path)
    }

    async fn changed(&mut self) {
        self.watcher.changed().await;
    }
}
