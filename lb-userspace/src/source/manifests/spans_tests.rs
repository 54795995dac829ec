//! A file cut again by its last read's spans is cut exactly as a fresh cut
//! of its new text, whatever the edit; and a change to one document cuts
//! only that document again.

use std::cell::Cell;

use proptest::prelude::*;

use super::{
    documents::{TooManyDocuments, split_documents},
    memo::TextKey,
    spans::{Cut, CutError, Span, cut_reusing},
    text::{Text, WINDOW_BYTES},
};

/// Lines that are markers, look like markers, or are content (the cuts
/// depend on each line alone, so a pool of lines covers the cases).
const LINES: &[&str] = &[
    "---\n",
    "--- {a: 1}\n",
    "---x\n",
    "...\n",
    "... # end\n",
    "....\n",
    "a: 1\n",
    "# comment\n",
    "\n",
    "  ---\n",
    "key: |\n",
    "  text ---\n",
    "%YAML 1.2\n",
    "---",
    "...",
    "x",
];

fn text_of(picks: &[usize]) -> String {
    picks.iter().map(|&i| LINES[i % LINES.len()]).collect()
}

/// What a user sees of each document: number, first line, text.
fn seen<'t>(cut: &Cut, text: &'t str) -> Vec<(usize, usize, &'t str)> {
    cut.documents
        .iter()
        .map(|d| {
            (
                d.number,
                d.first_line,
                &text[d.start..d.start + d.key.len()],
            )
        })
        .collect()
}

/// The spans tile the text, each is the hash of its bytes, starts at a
/// cut, and holds its document where the cut says.
fn assert_tiles(cut: &Cut, text: &str) {
    let bytes = text.as_bytes();
    let mut at = 0;
    let mut documents = cut.documents.iter();
    for span in &cut.spans {
        let end = at + span.key.len();
        assert_eq!(TextKey::of_bytes(&bytes[at..end]), span.key, "span at {at}");
        assert!(
            at == 0 || bytes[at - 1] == b'\n',
            "span at {at} starts a line"
        );
        let newlines = bytes[at..end].iter().filter(|&&b| b == b'\n').count();
        assert_eq!(span.newlines, newlines);
        if let Some(document) = span.document {
            let placed = documents.next().expect("a document per span that has one");
            assert_eq!(placed.start, at + document.offset);
            assert_eq!(placed.key, document.key);
        }
        at = end;
    }
    assert_eq!(at, bytes.len(), "the spans cover the text");
    assert!(documents.next().is_none());
}

fn fresh(text: &str, limit: usize) -> Result<Cut, CutError> {
    cut_reusing(&[], text.as_bytes(), limit)
}

/// A random edit of `before`: lines replaced, inserted or removed at one
/// place, so that both ends are found again.
fn edited(before: &[usize], at: usize, remove: usize, insert: &[usize]) -> Vec<usize> {
    let at = at % (before.len() + 1);
    let remove = remove.min(before.len() - at);
    let mut after = before.to_vec();
    after.splice(at..at + remove, insert.iter().copied());
    after
}

proptest! {
    /// Any text cut with any other text's spans is cut as a fresh cut and
    /// as `split_documents` cuts it (the reference).
    #[test]
    fn a_cut_again_is_a_fresh_cut(
        before in prop::collection::vec(0..LINES.len(), 0..30),
        at in 0..40usize,
        remove in 0..6usize,
        insert in prop::collection::vec(0..LINES.len(), 0..6),
        unrelated in prop::collection::vec(0..LINES.len(), 0..30),
        use_unrelated in any::<bool>(),
        limit in 1usize..12,
    ) {
        let old = text_of(&before);
        let new = if use_unrelated {
            text_of(&unrelated)
        } else {
            text_of(&edited(&before, at, remove, &insert))
        };
        let previous = match fresh(&old, 64) {
            Ok(cut) => cut.spans,
            Err(err) => panic!("{err:?}"),
        };
        let again = cut_reusing(&previous, new.as_bytes(), limit);
        let reference = split_documents(&new, limit)
            .map(|docs| docs.into_iter().map(|d| (d.number, d.first_line, d.text)).collect::<Vec<_>>());
        match (&again, reference) {
            (Ok(cut), Ok(reference)) => {
                prop_assert_eq!(seen(cut, &new), reference);
                assert_tiles(cut, &new);
                // And once more from these spans: cutting again is stable.
                let twice = cut_reusing(&cut.spans, new.as_bytes(), limit).expect("cut before");
                prop_assert_eq!(seen(&twice, &new), seen(cut, &new));
                prop_assert!(twice.documents.iter().all(|d| d.was.is_some()));
            }
            (Err(CutError::TooMany(TooManyDocuments { limit: got })), Err(TooManyDocuments { limit: want })) => {
                prop_assert_eq!(*got, want);
            }
            (again, reference) => prop_assert!(false, "{again:?} vs {reference:?}"),
        }
    }
}

fn services(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\nspec:\n  clusterIP: 10.96.0.{}\n", i % 250))
        .collect()
}

fn spans_of(text: &str) -> Vec<Span> {
    fresh(text, 10_000).expect("within the limit").spans
}

/// The manifest bench's edit: one line of one document, the rest untouched.
#[test]
fn a_change_to_one_document_cuts_only_that_document_again() {
    let mut docs = services(1_000);
    let previous = spans_of(&docs.join("---\n"));
    docs[10] = docs[10].replace("10.96.0.10", "10.96.0.99");
    let text = docs.join("---\n");
    let cut = cut_reusing(&previous, text.as_bytes(), 10_000).expect("within the limit");
    let cut_again: Vec<usize> = cut
        .documents
        .iter()
        .filter(|d| d.was.is_none())
        .map(|d| d.number)
        .collect();
    assert_eq!(cut_again, [11]);
    let was: Vec<usize> = cut.documents.iter().filter_map(|d| d.was).collect();
    assert_eq!(was, (0..1_000).filter(|&i| i != 10).collect::<Vec<_>>());
}

/// A text that counts the bytes read from it.
struct Counted<'t> {
    bytes: &'t [u8],
    read: Cell<usize>,
}

impl Text for Counted<'_> {
    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn read_at(&self, at: usize, into: &mut [u8]) -> std::io::Result<()> {
        self.read.set(self.read.get() + into.len());
        self.bytes.read_at(at, into)
    }
}

/// A file larger than the window: cut again, only the changed document's
/// stretch is kept, each byte is read about once (the window moves ahead
/// from the front and behind from the back), and the cut is the fresh one.
#[test]
fn a_large_file_cut_again_keeps_only_what_changed() {
    let mut docs = services(8_000);
    let previous = spans_of(&docs.join("---\n"));
    docs[4_000] = docs[4_000].replace("s4000", "renamed");
    let text = docs.join("---\n");
    assert!(text.len() > 8 * WINDOW_BYTES, "{} bytes", text.len());
    let counted = Counted {
        bytes: text.as_bytes(),
        read: Cell::new(0),
    };
    let cut = cut_reusing(&previous, &counted, 10_000).expect("within the limit");
    assert!(cut.middle.text.len() < 200, "{}", cut.middle.text);
    assert!(cut.middle.text.contains("renamed"));
    assert!(
        counted.read.get() < text.len() + 2 * WINDOW_BYTES + 1024,
        "read {} of {}",
        counted.read.get(),
        text.len()
    );
    let fresh = split_documents(&text, 10_000).expect("within the limit");
    assert_eq!(
        seen(&cut, &text),
        fresh
            .iter()
            .map(|d| (d.number, d.first_line, d.text))
            .collect::<Vec<_>>()
    );
    assert_tiles(&cut, &text);
}

/// A document removed: those after it are found again, renumbered, on
/// their new lines.
#[test]
fn documents_after_a_removed_one_are_found_again_and_renumbered() {
    let mut docs = services(100);
    let previous = spans_of(&docs.join("---\n"));
    docs.remove(50);
    let text = docs.join("---\n");
    let cut = cut_reusing(&previous, text.as_bytes(), 10_000).expect("within the limit");
    assert_eq!(cut.documents.len(), 99);
    for doc in &cut.documents {
        let was = if doc.number <= 50 {
            doc.number - 1
        } else {
            doc.number
        };
        assert_eq!(doc.was, Some(was), "document {}", doc.number);
    }
    let fresh = split_documents(&text, 10_000).expect("within the limit");
    let lines: Vec<usize> = cut.documents.iter().map(|d| d.first_line).collect();
    assert_eq!(
        lines,
        fresh.iter().map(|d| d.first_line).collect::<Vec<_>>()
    );
}

/// Bytes that are not UTF-8 are found where the text changed, and a file
/// of too many documents is refused whether its documents were found
/// again or cut again.
#[test]
fn a_cut_again_refuses_what_a_fresh_cut_refuses() {
    let docs = services(10);
    let text = docs.join("---\n");
    let previous = spans_of(&text);
    let mut broken = text.clone().into_bytes();
    let at = text.find("s5").expect("document 6");
    broken[at] = 0xff;
    assert!(matches!(
        cut_reusing(&previous, broken.as_slice(), 100),
        Err(CutError::NotUtf8)
    ));
    let more = format!("{text}---\n{}", docs[0]);
    assert!(matches!(
        cut_reusing(&previous, more.as_bytes(), 10),
        Err(CutError::TooMany(TooManyDocuments { limit: 10 }))
    ));
    assert!(matches!(
        cut_reusing(&previous, text.as_bytes(), 9),
        Err(CutError::TooMany(TooManyDocuments { limit: 9 }))
    ));
}
