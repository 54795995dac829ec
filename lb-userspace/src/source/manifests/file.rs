//! Reading one manifest file, within its limits, into what it holds.

use std::{
    fs::{self, File},
    path::Path,
};

use super::{
    cache::FileKey, limits::Limits, memo::DocumentMemo, stream::parse_text_reusing, text::FileText,
};
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
    #[error(
        "changed while lb read it; lb reads it again at its next change (write a file beside the directory and rename it in, and lb never sees it half written)"
    )]
    Changed,
}

impl FileError {
    pub fn code(&self) -> ProblemCode {
        match self {
            FileError::Read(_) | FileError::NotRegular | FileError::Changed => {
                ProblemCode::UnreadableFile
            }
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
    let read = open_text(path, limits.max_file_bytes).and_then(|(text, opened)| {
        let read = parse_text_reusing(name, &text, limits, previous);
        unchanged_since(&text, opened).map(|()| read)
    });
    match read {
        Ok((snapshot, memo)) => FileRead { snapshot, memo },
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

/// The file opened, refusing what is over `max_bytes` before reading it.
/// It is read as long as it was when opened; whether its bytes are UTF-8
/// is for the cutting to find out (it reads only what changed since the
/// last read whole).
fn open_text(path: &Path, max_bytes: u64) -> Result<(FileText, FileKey), FileError> {
    let meta = fs::metadata(path).map_err(FileError::Read)?;
    if !meta.is_file() {
        // Opening a FIFO would block until a writer comes.
        return Err(FileError::NotRegular);
    }
    let file = File::open(path).map_err(FileError::Read)?;
    // What was opened (the path may have been replaced since the stat).
    let meta = file.metadata().map_err(FileError::Read)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular);
    }
    if meta.len() > max_bytes {
        return Err(FileError::TooLarge { limit: max_bytes });
    }
    let text = FileText::new(file, meta.len()).map_err(FileError::Read)?;
    Ok((text, FileKey::of(&meta)))
}

/// A file written in place while it was read may have been read half old,
/// half new: such a read is not used.
fn unchanged_since(text: &FileText, opened: FileKey) -> Result<(), FileError> {
    let now = text.file().metadata().map_err(FileError::Read)?;
    if FileKey::of(&now) != opened {
        return Err(FileError::Changed);
    }
    Ok(())
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
