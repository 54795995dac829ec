//! Cutting a YAML stream into its documents, so that each is parsed on its
//! own: a syntax error in one cannot take the following ones with it, and a
//! problem names the document as a user counts them.
//!
//! serde-saphyr's multi-document readers (`from_multiple`) cannot serve
//! here: they fail the whole stream at the first broken document, and they
//! skip empty documents, so their indices are not the file's.
//!
//! Each document is a slice of the file's text, never a copy: cutting is
//! one pass over the text, and the reader is told the line a document
//! starts on rather than being handed text padded to it, so a file of many
//! documents costs what its size costs.

/// One YAML document of a stream, cut out of the text.
#[derive(Debug, PartialEq)]
pub(super) struct Document<'a> {
    /// 1-based, as a user counts documents in the file.
    pub number: usize,
    /// 1-based line of the file where `text` starts.
    pub first_line: usize,
    pub text: &'a str,
}

/// A stream holds more documents than allowed; the first `limit` are cut.
#[derive(Debug, PartialEq)]
pub(super) struct TooManyDocuments {
    pub limit: usize,
}

/// Splits a YAML stream at its document markers. A `---` or `...` at column
/// 0 always ends a document in YAML, even inside a block scalar, so cutting
/// by lines is exact. Past `max_documents` documents the stream is refused
/// as a whole: cutting stops there.
pub(super) fn split_documents(
    text: &str,
    max_documents: usize,
) -> Result<Vec<Document<'_>>, TooManyDocuments> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut cutter = Cutter {
        text,
        docs: Vec::new(),
        max_documents,
    };
    let mut current = Chunk::new(1, 0, false);
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let line_number = index + 1;
        offset += line.len();
        let bare = line.trim_end_matches(['\n', '\r']);
        if let Some(rest) = start_marker(bare) {
            cutter.finish(&current)?;
            current = Chunk::new(line_number, offset - (line.len() - 3), true);
            current.push(rest, offset);
        } else if is_end_marker(bare) {
            cutter.finish(&current)?;
            current = Chunk::new(line_number + 1, offset, false);
        } else {
            current.push(bare, offset);
        }
    }
    cutter.finish(&current)?;
    Ok(cutter.docs)
}

/// `---` alone or followed by a space and inline content; returns that content.
pub(super) fn start_marker(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("---")?;
    if rest.is_empty() || rest.starts_with([' ', '\t']) {
        Some(rest)
    } else {
        None
    }
}

fn is_end_marker(line: &str) -> bool {
    line.strip_prefix("...")
        .is_some_and(|rest| rest.trim().is_empty() || rest.trim_start().starts_with('#'))
}

/// A document being collected: where it starts and ends in the text.
struct Chunk {
    first_line: usize,
    explicit_start: bool,
    start: usize,
    end: usize,
    has_content: bool,
}

impl Chunk {
    fn new(first_line: usize, start: usize, explicit_start: bool) -> Chunk {
        Chunk {
            first_line,
            explicit_start,
            start,
            end: start,
            has_content: false,
        }
    }

    /// Extends the chunk to `end` with `line`. Content is anything but
    /// blank lines, comments and directives.
    fn push(&mut self, line: &str, end: usize) {
        // Only the first character past the indentation counts, and only
        // until some line had content (most lines of a large file).
        if !self.has_content {
            let line = line.trim_start();
            self.has_content = !(line.is_empty() || line.starts_with('#') || line.starts_with('%'));
        }
        self.end = end;
    }
}

/// The documents cut so far.
struct Cutter<'a> {
    text: &'a str,
    docs: Vec<Document<'a>>,
    max_documents: usize,
}

impl<'a> Cutter<'a> {
    /// In YAML a document exists if it has an explicit start or any content;
    /// comments before the first `---` are no document of their own.
    fn finish(&mut self, chunk: &Chunk) -> Result<(), TooManyDocuments> {
        if !(chunk.explicit_start || chunk.has_content) {
            return Ok(());
        }
        if self.docs.len() == self.max_documents {
            return Err(TooManyDocuments {
                limit: self.max_documents,
            });
        }
        self.docs.push(Document {
            number: self.docs.len() + 1,
            first_line: chunk.first_line,
            text: &self.text[chunk.start..chunk.end],
        });
        Ok(())
    }
}
