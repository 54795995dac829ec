//! The document cutter, against the line-by-line cutter it replaced: the
//! same documents, numbers and first lines for any text.

use proptest::prelude::*;

use super::documents::{Document, TooManyDocuments, is_end_marker, split_documents, start_marker};

/// Lines that exercise every rule of the cutter: markers with and without
/// content, near misses, comments, directives, CRLF, blank lines.
const LINES: &[&str] = &[
    "---\n",
    "--- {a: 1}\n",
    "---\t# c\n",
    "----\n",
    "---x\n",
    "--\n",
    "...\n",
    "... # end\n",
    "...x\n",
    "....\n",
    "---\r\n",
    "...\r\n",
    "\n",
    "\r\n",
    "   \n",
    "# comment\n",
    "%YAML 1.2\n",
    "a: 1\n",
    "  - b\n",
    "- c\n",
    "  ---\n",
    "key: |\n",
    "  text ---\n",
    "\u{feff}---\n",
    "---",
    "...",
    "x",
];

fn text_of(picks: &[usize]) -> String {
    picks.iter().map(|&i| LINES[i]).collect()
}

fn summary<'a>(
    cut: Result<Vec<Document<'a>>, TooManyDocuments>,
) -> Result<Vec<(usize, usize, &'a str)>, TooManyDocuments> {
    cut.map(|docs| {
        docs.into_iter()
            .map(|d| (d.number, d.first_line, d.text))
            .collect()
    })
}

proptest! {
    #[test]
    fn cuts_as_the_line_by_line_cutter_did(
        picks in proptest::collection::vec(0..LINES.len(), 0..40),
        bom in any::<bool>(),
        limit in 1usize..8,
    ) {
        let text = format!("{}{}", if bom { "\u{feff}" } else { "" }, text_of(&picks));
        prop_assert_eq!(summary(split_documents(&text, limit)), summary(split_by_lines(&text, limit)));
    }
}

#[test]
fn markers_are_found_at_the_start_and_after_every_newline_only() {
    let text = "--- {a: 1}\nb: ---\n---\n... \nc: 2\n";
    let docs = split_documents(text, 10).expect("within the limit");
    let summary: Vec<_> = docs
        .iter()
        .map(|d| (d.number, d.first_line, d.text))
        .collect();
    assert_eq!(
        summary,
        vec![(1, 1, " {a: 1}\nb: ---\n"), (2, 3, "\n"), (3, 5, "c: 2\n")]
    );
}

/// The cutter as it was, each line looked at in turn: the reference the
/// fast one must agree with (the rules are `split_documents`'s).
fn split_by_lines(text: &str, max_documents: usize) -> Result<Vec<Document<'_>>, TooManyDocuments> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut cutter = LineCutter {
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
struct LineCutter<'a> {
    text: &'a str,
    docs: Vec<Document<'a>>,
    max_documents: usize,
}

impl<'a> LineCutter<'a> {
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
            end: chunk.end,
        });
        Ok(())
    }
}
