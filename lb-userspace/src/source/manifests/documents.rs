//! Cutting a YAML stream into its documents, so that each is parsed on its
//! own: a syntax error in one cannot take the following ones with it, and a
//! problem names the document as a user counts them.
//!
//! serde-saphyr's multi-document readers (`from_multiple`) cannot serve
//! here: they fail the whole stream at the first broken document, and they
//! skip empty documents, so their indices are not the file's.
//!
//! Each document is a slice of the file's text, never a copy: cutting
//! looks only at the lines that may be markers, and the reader is told the
//! line a document starts on rather than being handed text padded to it,
//! so a file of many documents costs what its size costs.

/// One YAML document of a stream, cut out of the text.
#[derive(Debug, PartialEq)]
pub(super) struct Document<'a> {
    /// 1-based, as a user counts documents in the file.
    pub number: usize,
    /// 1-based line of the file where `text` starts.
    pub first_line: usize,
    pub text: &'a str,
    /// Where the document's chunk ends in the text cut: at the start of
    /// the next marker line, or at the end of the text.
    pub end: usize,
}

/// Where a stretch of a file starts: the number its first document gets
/// and its first line.
#[derive(Clone, Copy, Debug)]
pub(super) struct StretchStart {
    pub number: usize,
    pub line: usize,
}

impl StretchStart {
    #[cfg(test)]
    pub const FILE: StretchStart = StretchStart { number: 1, line: 1 };
}

/// A stream holds more documents than allowed; the first `limit` are cut.
#[derive(Debug, PartialEq)]
pub(super) struct TooManyDocuments {
    pub limit: usize,
}

/// Splits a YAML stream (a whole file) at its document markers: see
/// [`split_stretch`]. Files are cut by [`super::spans`], which reuses the
/// last read's cuts; this is the reference it is tested against.
#[cfg(test)]
pub(super) fn split_documents(
    text: &str,
    max_documents: usize,
) -> Result<Vec<Document<'_>>, TooManyDocuments> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    split_stretch(text, StretchStart::FILE, max_documents)
}

/// Splits a YAML stream at its document markers. A `---` or `...` at column
/// 0 always ends a document in YAML, even inside a block scalar, so cutting
/// by lines is exact. Past `max_documents` documents the stream is refused
/// as a whole: cutting stops there.
///
/// Only the lines that begin with `---` or `...` are looked at (found by a
/// vectorised search, as are the line numbers): a file of 10,000 Services
/// is cut in about a millisecond, where a look at each of its lines took
/// four, at each change of any one of its documents.
///
/// The text is a stretch of a file (no byte order mark): one that starts
/// at the start of the file or of a marker line, and ends at the end of
/// the file or at the start of a marker line, so that it is cut as the
/// whole file would be there. Documents are numbered and lines
/// counted from `start`; `max_documents` is what the stretch may hold.
pub(super) fn split_stretch(
    text: &str,
    start: StretchStart,
    max_documents: usize,
) -> Result<Vec<Document<'_>>, TooManyDocuments> {
    let mut cutter = Cutter {
        text,
        docs: Vec::new(),
        max_documents,
        first_number: start.number,
        lines: LineCounter {
            first_line: start.line,
            ..LineCounter::default()
        },
    };
    let mut current = Chunk {
        first_line: start.line,
        start: 0,
        explicit_start: false,
    };
    for at in marker_candidates(text) {
        let line = line_at(text, at);
        let next = if starts_document(line) {
            Chunk {
                first_line: cutter.lines.line_of(text, at),
                start: at + 3,
                explicit_start: true,
            }
        } else if ends_document(line) {
            Chunk {
                first_line: cutter.lines.line_of(text, at) + 1,
                start: at + line.len(),
                explicit_start: false,
            }
        } else {
            continue;
        };
        cutter.finish(&current, at)?;
        current = next;
    }
    cutter.finish(&current, text.len())?;
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

/// Whether `line` (with its newline, if any) is a `---` marker.
fn starts_document(line: &str) -> bool {
    start_marker(line.trim_end_matches(['\n', '\r'])).is_some()
}

/// Whether `line` (with its newline, if any) is a `...` marker.
fn ends_document(line: &str) -> bool {
    is_end_marker(line.trim_end_matches(['\n', '\r']))
}

/// Whether `line` (a whole line of a text, with its newline if any) is a
/// marker: where a cut is.
pub(super) fn is_marker_line(line: &[u8]) -> bool {
    std::str::from_utf8(line).is_ok_and(|line| starts_document(line) || ends_document(line))
}

pub(super) fn is_end_marker(line: &str) -> bool {
    line.strip_prefix("...")
        .is_some_and(|rest| rest.trim().is_empty() || rest.trim_start().starts_with('#'))
}

/// The offsets, in order, of every line that begins with `---` or `...`:
/// the only lines that can be markers.
fn marker_candidates(text: &str) -> impl Iterator<Item = usize> + '_ {
    let bytes = text.as_bytes();
    let first = (bytes.starts_with(b"---") || bytes.starts_with(b"...")).then_some(0);
    let after_newline =
        |needle: &'static [u8]| memchr::memmem::find_iter(bytes, needle).map(|newline| newline + 1);
    first.into_iter().chain(Merged {
        dashes: after_newline(b"\n---").peekable(),
        dots: after_newline(b"\n...").peekable(),
    })
}

/// Two ascending sequences of offsets as one (no offset is in both: a line
/// begins with `---` or with `...`).
struct Merged<A: Iterator<Item = usize>, B: Iterator<Item = usize>> {
    dashes: std::iter::Peekable<A>,
    dots: std::iter::Peekable<B>,
}

impl<A: Iterator<Item = usize>, B: Iterator<Item = usize>> Iterator for Merged<A, B> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match (self.dashes.peek(), self.dots.peek()) {
            (Some(dash), Some(dot)) if dot < dash => self.dots.next(),
            (Some(_), _) => self.dashes.next(),
            (None, _) => self.dots.next(),
        }
    }
}

/// The line that starts at `at`, with its newline if it has one.
fn line_at(text: &str, at: usize) -> &str {
    let rest = &text[at..];
    match memchr::memchr(b'\n', rest.as_bytes()) {
        Some(newline) => &rest[..=newline],
        None => rest,
    }
}

/// Line numbers of ascending offsets, counting each stretch of the text once.
#[derive(Default)]
struct LineCounter {
    first_line: usize,
    counted_to: usize,
    newlines: usize,
}

impl LineCounter {
    /// The 1-based line of the line start `at` (never before the last one asked).
    fn line_of(&mut self, text: &str, at: usize) -> usize {
        let stretch = &text.as_bytes()[self.counted_to..at];
        self.newlines += memchr::memchr_iter(b'\n', stretch).count();
        self.counted_to = at;
        self.newlines + self.first_line
    }
}

/// A document being collected: where it starts in the text (it ends where
/// the next marker line starts).
struct Chunk {
    first_line: usize,
    start: usize,
    explicit_start: bool,
}

/// Whether a document without a start marker has content: anything but
/// blank lines, comments and directives. Only the lines up to the first
/// with content are looked at (most documents: their first).
fn has_content(text: &str) -> bool {
    text.split_inclusive('\n').any(|line| {
        let line = line.trim_end_matches(['\n', '\r']).trim_start();
        !(line.is_empty() || line.starts_with('#') || line.starts_with('%'))
    })
}

/// The documents cut so far.
struct Cutter<'a> {
    text: &'a str,
    docs: Vec<Document<'a>>,
    max_documents: usize,
    first_number: usize,
    lines: LineCounter,
}

impl<'a> Cutter<'a> {
    /// In YAML a document exists if it has an explicit start or any content;
    /// comments before the first `---` are no document of their own. The
    /// chunk ends at `end`.
    fn finish(&mut self, chunk: &Chunk, end: usize) -> Result<(), TooManyDocuments> {
        let text = &self.text[chunk.start..end];
        if !(chunk.explicit_start || has_content(text)) {
            return Ok(());
        }
        if self.docs.len() == self.max_documents {
            return Err(TooManyDocuments {
                limit: self.max_documents,
            });
        }
        self.docs.push(Document {
            number: self.first_number + self.docs.len(),
            first_line: chunk.first_line,
            text,
            end,
        });
        Ok(())
    }
}
