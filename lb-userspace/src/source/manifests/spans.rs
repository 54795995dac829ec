//! Cutting a file read again by the spans its last read cut it into, so a
//! change to one document of a file of 10,000 Services cuts, checks and
//! counts the lines of only the stretch around it: the rest is recognised
//! by its spans' hashes (one pass of XXH3), where cutting it all again
//! (two searches for markers, a UTF-8 check and a count of lines over the
//! whole file) took 8 ms of the 17 a reread took.
//!
//! A span is a stretch of the file from one cut to another (a cut is the
//! file's start or end, or the start of a marker line) that holds at most
//! one document. Whether a line is a marker depends on that line alone, so
//! a span whose bytes are found again in the new text, starting and ending
//! at cuts of the new text, holds the same document (and the same chunks
//! without one) as before. Spans are matched from the front, where they
//! were, and from the back, shifted by the change in length; only what
//! lies between is cut again, and only it is kept (the rest is read
//! through a window: `text`).

use std::io;

use super::{
    documents::{StretchStart, TooManyDocuments, is_marker_line, split_stretch},
    memo::TextKey,
    text::{Text, Toward, Window, read_range},
};

/// One stretch of the file between two cuts, as the last read cut it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Span {
    /// Its text's hash and length.
    pub key: TextKey,
    pub newlines: usize,
    pub document: Option<SpanDocument>,
}

/// Where a span's document is in it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct SpanDocument {
    /// Bytes from the span's start to the document's text.
    pub offset: usize,
    /// Lines from the span's first line to the document's first.
    pub lines: usize,
    pub key: TextKey,
}

/// A document of the new text.
#[derive(Debug, PartialEq)]
pub(super) struct Placed {
    /// 1-based, as a user counts documents in the file.
    pub number: usize,
    /// 1-based line of the file where its text starts.
    pub first_line: usize,
    /// Where its text starts (after any byte order mark); it is
    /// `key.len()` bytes long.
    pub start: usize,
    pub key: TextKey,
    /// Its index among the last read's documents, when its span was found
    /// again (documents cut again are looked up by their key instead).
    pub was: Option<usize>,
}

/// The new text's documents and spans, and the stretch cut again.
#[derive(Debug, Default)]
pub(super) struct Cut {
    pub documents: Vec<Placed>,
    pub spans: Vec<Span>,
    pub middle: Middle,
}

/// The stretch of the new text between the spans found again: the text
/// of every document cut again.
#[derive(Debug, Default)]
pub(super) struct Middle {
    /// Where it starts in the text.
    pub at: usize,
    pub text: String,
}

impl Middle {
    /// The text of a document cut again (`was` none).
    pub fn text_of(&self, document: &Placed) -> Option<&str> {
        let start = document.start.checked_sub(self.at)?;
        self.text.get(start..start + document.key.len())
    }
}

/// Why a text cannot be cut.
#[derive(Debug)]
pub(super) enum CutError {
    TooMany(TooManyDocuments),
    NotUtf8,
    Read(io::Error),
}

impl From<io::Error> for CutError {
    fn from(err: io::Error) -> CutError {
        CutError::Read(err)
    }
}

/// Cuts `text` (after any byte order mark) into its documents, reusing the
/// `previous` read's spans (none: the whole text is cut).
pub(super) fn cut_reusing<T: Text + ?Sized>(
    previous: &[Span],
    text: &T,
    max_documents: usize,
) -> Result<Cut, CutError> {
    let ends = Ends::matching(previous, &mut Window::new(text))?;
    let (front, back) = (
        &previous[..ends.front],
        &previous[previous.len() - ends.back..],
    );
    let (front_docs, back_docs) = (documents_in(front), documents_in(back));
    let too_many = || {
        CutError::TooMany(TooManyDocuments {
            limit: max_documents,
        })
    };
    let allowed = max_documents
        .checked_sub(front_docs + back_docs)
        .ok_or_else(too_many)?;
    let middle_at = ends.front_bytes;
    let middle = read_range(text, middle_at..text.len() - ends.back_bytes)?;
    let middle = String::from_utf8(middle).map_err(|_| CutError::NotUtf8)?;
    let mut placer = Placer {
        cut: Cut {
            documents: Vec::with_capacity(front_docs + back_docs + 1),
            spans: Vec::with_capacity(previous.len() + 1),
            middle: Middle::default(),
        },
        at: 0,
        line: 1,
        number: 1,
        was: 0,
    };
    for span in front {
        placer.place_again(span);
    }
    placer
        .place_middle(&middle, allowed)
        .map_err(|_| too_many())?;
    placer.was = documents_in(previous) - back_docs;
    for span in back {
        placer.place_again(span);
    }
    placer.cut.middle = Middle {
        at: middle_at,
        text: middle,
    };
    Ok(placer.cut)
}

fn documents_in(spans: &[Span]) -> usize {
    spans.iter().filter(|s| s.document.is_some()).count()
}

/// How many of the previous spans were found again at each end of the new
/// text, and how many bytes they cover there.
#[derive(Debug, PartialEq)]
struct Ends {
    front: usize,
    front_bytes: usize,
    back: usize,
    back_bytes: usize,
}

impl Ends {
    fn matching(previous: &[Span], text: &mut Window<'_, impl Text + ?Sized>) -> io::Result<Ends> {
        let (front, front_bytes) = Ends::front(previous, text)?;
        let (back, back_bytes) = Ends::back(previous, front, text, front_bytes)?;
        Ok(Ends {
            front,
            front_bytes,
            back,
            back_bytes,
        })
    }

    /// Spans found where they were, each ending at a cut of the new text.
    fn front(
        previous: &[Span],
        text: &mut Window<'_, impl Text + ?Sized>,
    ) -> io::Result<(usize, usize)> {
        let mut at = 0;
        for (matched, span) in previous.iter().enumerate() {
            let end = at + span.key.len();
            // The span's bytes first: the window then moves ahead for the
            // line after them, which the next span starts with.
            if end > text.len()
                || TextKey::of_bytes(text.get(at..end, Toward::End)?) != span.key
                || !is_cut(text, end)?
            {
                return Ok((matched, at));
            }
            at = end;
        }
        Ok((previous.len(), at))
    }

    /// Spans after the `front` ones found at the end of the new text,
    /// moved by the change in length, each starting at a cut of the new
    /// text and none reaching before `floor` (what the front found).
    fn back(
        previous: &[Span],
        front: usize,
        text: &mut Window<'_, impl Text + ?Sized>,
        floor: usize,
    ) -> io::Result<(usize, usize)> {
        let mut old_start: usize = previous.iter().map(|s| s.key.len()).sum();
        let mut start = text.len();
        for (matched, span) in previous[front..].iter().rev().enumerate() {
            let len = span.key.len();
            if start < floor + len {
                return Ok((matched, text.len() - start));
            }
            let (new, old) = (start - len, old_start - len);
            // A span that started the file started at no marker line;
            // the others start a line (the byte before them, read with
            // them so that the window moves once).
            let before = if old == 0 { new } else { new.saturating_sub(1) };
            let bytes = text.get(before..start, Toward::Start)?;
            let at_cut = if old == 0 {
                new == 0
            } else {
                new > 0 && bytes[0] == b'\n'
            };
            if !at_cut || TextKey::of_bytes(&bytes[new - before..]) != span.key {
                return Ok((matched, text.len() - start));
            }
            (start, old_start) = (new, old);
        }
        Ok((previous.len() - front, text.len() - start))
    }
}

/// Whether the new text is cut at `at`: its end, or a marker line's start.
fn is_cut(text: &mut Window<'_, impl Text + ?Sized>, at: usize) -> io::Result<bool> {
    Ok(at == text.len()
        || (at > 0
            && text.byte(at - 1, Toward::End)? == b'\n'
            && is_marker_line(text.line(at, Toward::End)?)))
}

/// Builds the new cut in the text's order.
struct Placer {
    cut: Cut,
    /// Where the next span starts, its first line, the next document's
    /// number, and the last read's index of the next document found again.
    at: usize,
    line: usize,
    number: usize,
    was: usize,
}

impl Placer {
    /// A span found again, with its document.
    fn place_again(&mut self, span: &Span) {
        if let Some(document) = span.document {
            self.cut.documents.push(Placed {
                number: self.number,
                first_line: self.line + document.lines,
                start: self.at + document.offset,
                key: document.key,
                was: Some(self.was),
            });
            self.number += 1;
            self.was += 1;
        }
        self.advance(span);
    }

    fn advance(&mut self, span: &Span) {
        self.at += span.key.len();
        self.line += span.newlines;
        self.cut.spans.push(*span);
    }

    /// Cuts the stretch between the spans found again: a span per document
    /// (from the previous one's end to its own), what follows the last one
    /// in its span too.
    fn place_middle(&mut self, middle: &str, allowed: usize) -> Result<(), TooManyDocuments> {
        let start = StretchStart {
            number: self.number,
            line: self.line,
        };
        let docs = split_stretch(middle, start, allowed)?;
        let mut span_start = 0;
        for (i, doc) in docs.iter().enumerate() {
            let span_end = if i + 1 == docs.len() {
                middle.len()
            } else {
                doc.end
            };
            let offset = doc.text.as_ptr() as usize - middle.as_ptr() as usize;
            let key = TextKey::of(doc.text);
            self.cut.documents.push(Placed {
                number: doc.number,
                first_line: doc.first_line,
                start: self.at + offset - span_start,
                key,
                was: None,
            });
            let document = SpanDocument {
                offset: offset - span_start,
                lines: doc.first_line - self.line,
                key,
            };
            self.advance(&span_of(&middle[span_start..span_end], Some(document)));
            self.number += 1;
            span_start = span_end;
        }
        if span_start < middle.len() {
            self.advance(&span_of(&middle[span_start..], None));
        }
        Ok(())
    }
}

fn span_of(text: &str, document: Option<SpanDocument>) -> Span {
    Span {
        key: TextKey::of(text),
        newlines: memchr::memchr_iter(b'\n', text.as_bytes()).count(),
        document,
    }
}
