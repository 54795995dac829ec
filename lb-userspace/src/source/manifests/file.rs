//! Reading one manifest file, within its limits, into what it holds.

use std::{
    fs::{self, File},
    io::Read,
    path::Path,
};

use super::{limits::Limits, memo::DocumentMemo, parse::parse_bytes_reusing};
use crate::{model::ProblemCode, source::Snapshot};

/// Why one manifest file could not be used at all (the others still are).
#[derive(Debug, thiserror::Error)]
pub(super) enum FileError {
    #[error("cannot read: {0}; check the file's permissions and, for a symlink, its target")]
    Read(#[source] std::io::Error),
    #[error("not a regular file (a FIFO, socket or device): lb reads only regular files")]
    NotRegular,
    #[error(
        "larger than {limit} bytes (--manifest-max-file-bytes): split it into several files, or raise the limit"
    )]
    TooLarge { limit: u64 },
}

impl FileError {
    pub fn code(&self) -> ProblemCode {
        match self {
            FileError::Read(_) | FileError::NotRegular => ProblemCode::UnreadableFile,
            FileError::TooLarge { .. } => ProblemCode::FileTooLarge,
        }
    }
}

/// What one read of a file gave, and the memo of its documents for the
/// next read.
#[derive(Debug, Default)]
pub(super) struct FileRead {
    pub snapshot: Snapshot,
    pub memo: DocumentMemo,
}

/// What `path` holds; `name` is how problems call the file. The documents
/// `previous` (its last read) remembers are not parsed again.
pub(super) fn read_manifest_file(
    path: &Path,
    name: &str,
    limits: &Limits,
    previous: &DocumentMemo,
) -> FileRead {
    match read_bytes(path, limits.max_file_bytes) {
        Ok(bytes) => {
            let (snapshot, memo) = parse_bytes_reusing(name, &bytes, limits, previous);
            FileRead { snapshot, memo }
        }
        Err(err) => {
            let mut snapshot = Snapshot::default();
            snapshot.coded_problem(err.code(), name, err.to_string());
            snapshot.attribute_to(name);
            FileRead {
                snapshot,
                memo: DocumentMemo::default(),
            }
        }
    }
}

/// The file's bytes, refusing what is over `max_bytes` before reading it:
/// both by its size now and by what a read actually returns (it may grow).
/// Whether they are UTF-8 is for the cutting to find out: it checks only
/// what changed since the last read.
fn read_bytes(path: &Path, max_bytes: u64) -> Result<Vec<u8>, FileError> {
    let meta = fs::metadata(path).map_err(FileError::Read)?;
    if !meta.is_file() {
        // Opening a FIFO would block until a writer comes.
        return Err(FileError::NotRegular);
    }
    if meta.len() > max_bytes {
        return Err(FileError::TooLarge { limit: max_bytes });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    File::open(path)
        .and_then(|file| file.take(max_bytes + 1).read_to_end(&mut bytes))
        .map_err(FileError::Read)?;
    if bytes.len() as u64 > max_bytes {
        return Err(FileError::TooLarge { limit: max_bytes });
    }
    Ok(bytes)
}

/// Problems that mean "this file, as it is now, is not what its writer
/// meant" (half written, corrupt, too big), as opposed to an object in a
/// well-formed file that Kubernetes would refuse.
pub(super) fn unusable(code: ProblemCode) -> bool {
    matches!(
        code,
        ProblemCode::UnreadableFile
            | ProblemCode::NotUtf8
            | ProblemCode::FileTooLarge
            | ProblemCode::TooManyDocuments
            | ProblemCode::TooDeep
            | ProblemCode::YamlBudget
            | ProblemCode::InvalidYaml
    )
}
