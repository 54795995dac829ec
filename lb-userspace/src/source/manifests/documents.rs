//! Cutting a YAML stream into its documents, so that each is parsed on its
//! own: a syntax error in one cannot take the following ones with it, and a
//! problem names the document as a user counts them.
//!
//! serde-saphyr's multi-document readers (`from_multiple`) cannot serve
//! here: they fail the whole stream at the first broken document, and they
//! skip empty documents, so their indices are not the file's.

/// One YAML document of a stream, cut out of the text.
#[derive(Debug, PartialEq)]
pub(super) struct Document {
    /// 1-based, as a user counts documents in the file.
    pub number: usize,
    /// 1-based line of the file where `text` starts.
    pub first_line: usize,
    pub text: String,
}

/// Splits a YAML stream at its document markers. A `---` or `...` at column
/// 0 always ends a document in YAML, even inside a block scalar, so cutting
/// by lines is exact.
pub(super) fn split_documents(text: &str) -> Vec<Document> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut docs = Vec::new();
    let mut current = Chunk::new(1, false);
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        if let Some(rest) = start_marker(line) {
            current.finish(&mut docs);
            current = Chunk::new(line_number, true);
            current.push(rest);
        } else if is_end_marker(line) {
            current.finish(&mut docs);
            current = Chunk::new(line_number + 1, false);
        } else {
            current.push(line);
        }
    }
    current.finish(&mut docs);
    docs
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

/// A document being collected by [`split_documents`].
struct Chunk {
    first_line: usize,
    explicit_start: bool,
    lines: Vec<String>,
}

impl Chunk {
    fn new(first_line: usize, explicit_start: bool) -> Chunk {
        Chunk {
            first_line,
            explicit_start,
            lines: Vec::new(),
        }
    }

    fn push(&mut self, line: &str) {
        self.lines.push(line.to_owned());
    }

    /// Content is anything but blank lines, comments and directives.
    fn has_content(&self) -> bool {
        self.lines.iter().any(|line| {
            let line = line.trim();
            !(line.is_empty() || line.starts_with('#') || line.starts_with('%'))
        })
    }

    /// In YAML a document exists if it has an explicit start or any content;
    /// comments before the first `---` are no document of their own.
    fn finish(&mut self, docs: &mut Vec<Document>) {
        if !(self.explicit_start || self.has_content()) {
            return;
        }
        let mut text = self.lines.join("\n");
        text.push('\n');
        docs.push(Document {
            number: docs.len() + 1,
            first_line: self.first_line,
            text,
        });
    }
}
