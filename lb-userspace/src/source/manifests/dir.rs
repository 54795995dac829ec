//! Reading a directory of manifest files into one snapshot.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::parse::parse_documents;
use crate::source::{Snapshot, SourceError};

/// Why one manifest file could not be used (the others still are).
#[derive(Debug, thiserror::Error)]
enum FileError {
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    #[error("not UTF-8 text")]
    NotUtf8,
}

/// Loads every `*.yaml` / `*.yml` file directly in `dir`, in name order so the
/// result (and which of two duplicates wins downstream) is the same on every
/// run. Hidden files and editor leftovers are ignored: an editor's temporary
/// copy must not double every object while a file is being edited.
///
/// A directory that cannot be listed is an error, not an empty snapshot; a
/// file that cannot be read is a problem of that file alone.
pub fn load_dir(dir: &Path) -> Result<Snapshot, SourceError> {
    let files = manifest_files(dir).map_err(|source| SourceError::Unreadable {
        path: dir.to_owned(),
        source,
    })?;
    let mut set = Snapshot::default();
    for path in files {
        let name = display_name(&path);
        match read_text(&path) {
            Ok(text) => set.extend(parse_documents(&name, &text)),
            Err(err) => set.problem(name, err.to_string()),
        }
    }
    Ok(set)
}

/// The manifest files of `dir`, sorted by name.
fn manifest_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        // `metadata` follows symlinks, as ConfigMap mounts are made of them.
        if is_manifest_name(&name) && fs::metadata(&path).is_ok_and(|m| m.is_file()) {
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

fn read_text(path: &Path) -> Result<String, FileError> {
    let bytes = fs::read(path).map_err(FileError::Read)?;
    String::from_utf8(bytes).map_err(|_| FileError::NotUtf8)
}
