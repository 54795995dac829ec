//! A YAML stream (a file) into what its documents hold: cut (reusing the
//! last read's spans), each document's objects reused from the last read
//! when its text is unchanged, the others parsed (`parse`).
//!
//! The documents are parsed on the reading thread. On two threads the
//! first read of 10,000 Services (20,000 documents, about 0.9 s) took 1.45
//! times as long: the agent runs with one malloc arena
//! (`agent::malloc_arenas`), and the parsers waited on its lock; with two
//! arenas it took 0.7 times as long, at the cost in peak memory that
//! module measured.

use std::borrow::Cow;

use super::{
    documents::TooManyDocuments,
    limits::Limits,
    memo::{DocumentMemo, Objects, TextKey},
    parse::parse_document,
    spans::{Cut, CutError, Middle, Placed, cut_reusing},
    text::{Text, bytes_text, read_range},
    yaml::DocumentText,
};
use crate::{model::ProblemCode, source::Snapshot};

/// Parses a YAML stream that may hold several documents. `source_name` names
/// the stream in problems ("web.yaml (document 2)").
pub fn parse_documents(source_name: &str, text: &str) -> Snapshot {
    parse_documents_with(source_name, text, &Limits::default())
}

/// [`parse_documents`] within `limits`: a stream of too many documents is
/// one problem of the stream, a document too deep one of that document.
pub fn parse_documents_with(source_name: &str, text: &str, limits: &Limits) -> Snapshot {
    parse_documents_reusing(source_name, text, limits, &DocumentMemo::default()).0
}

/// [`parse_documents_with`], reusing the objects of the documents whose
/// text `previous` remembers (the file's last read); returns what it read
/// and the memo of this read.
pub(super) fn parse_documents_reusing(
    source_name: &str,
    text: &str,
    limits: &Limits,
    previous: &DocumentMemo,
) -> (Snapshot, DocumentMemo) {
    parse_text_reusing(source_name, bytes_text(text.as_bytes()), limits, previous)
}

/// [`parse_documents_reusing`] of a text read by range (a file's): only
/// what is cut again (not found in `previous`' spans) is read whole and
/// checked to be UTF-8.
pub(super) fn parse_text_reusing<T: Text + ?Sized>(
    source_name: &str,
    text: &T,
    limits: &Limits,
    previous: &DocumentMemo,
) -> (Snapshot, DocumentMemo) {
    let mut set = Snapshot::default();
    let cut = match cut_reusing(previous.spans(), text, limits.max_documents) {
        Ok(cut) => cut,
        Err(err) => {
            let (code, reason) = cut_problem(err);
            set.coded_problem(code, source_name, reason);
            set.attribute_to(source_name);
            return (set, DocumentMemo::default());
        }
    };
    let Cut {
        documents,
        spans,
        middle,
    } = cut;
    let keys: Vec<TextKey> = documents.iter().map(|doc| doc.key).collect();
    let reused = reusable(&documents, &keys, previous);
    let mut memo = DocumentMemo::with_spans(documents.len(), spans);
    for ((doc, key), objects) in documents.iter().zip(keys).zip(reused) {
        match objects {
            Some(objects) => memo.reuse(key, objects, &mut set),
            None => {
                let read = parse_placed(source_name, text, &middle, doc, limits);
                memo.remember(key, &read);
                set.extend(read);
            }
        }
    }
    set.attribute_to(source_name);
    (set, memo)
}

/// What each document gave when last read, where its text is unchanged
/// and that read had no problem; in the file's order.
fn reusable<'m>(
    documents: &[Placed],
    keys: &[TextKey],
    previous: &'m DocumentMemo,
) -> Vec<Option<&'m Objects>> {
    let mut finder = previous.finder();
    (documents.iter().enumerate())
        .map(|(i, doc)| match doc.was {
            Some(at) => previous.objects(at),
            None => finder.find(i, keys),
        })
        .collect()
}

/// What one document cut again holds.
fn parse_placed<T: Text + ?Sized>(
    source_name: &str,
    text: &T,
    middle: &Middle,
    doc: &Placed,
    limits: &Limits,
) -> Snapshot {
    let place = format!("{source_name} (document {})", doc.number);
    let mut read = Snapshot::default();
    match document_text(text, middle, doc) {
        Ok(doc_text) => {
            let doc_text = DocumentText {
                text: &doc_text,
                first_line: doc.first_line,
            };
            parse_document(&place, doc_text, limits, &mut read);
        }
        Err(err) => {
            let (code, reason) = cut_problem(err);
            read.coded_problem(code, &place, reason);
        }
    }
    read
}

/// The text of a document to parse: one cut again is in the middle read;
/// one found again whose last read had a problem is read again (so that
/// its problem is reported at its place now).
fn document_text<'m, T: Text + ?Sized>(
    text: &T,
    middle: &'m Middle,
    doc: &Placed,
) -> Result<Cow<'m, str>, CutError> {
    if let Some(doc_text) = middle.text_of(doc) {
        return Ok(Cow::Borrowed(doc_text));
    }
    let bytes = read_range(text, doc.start..doc.start + doc.key.len())?;
    // A span's hash matched other bytes: not UTF-8 after all.
    String::from_utf8(bytes)
        .map(Cow::Owned)
        .map_err(|_| CutError::NotUtf8)
}

fn cut_problem(err: CutError) -> (ProblemCode, String) {
    match err {
        CutError::TooMany(TooManyDocuments { limit }) => (
            ProblemCode::TooManyDocuments,
            format!(
                "more than {limit} documents (--manifest-max-documents): split it into several files, or raise the limit"
            ),
        ),
        CutError::NotUtf8 => (ProblemCode::NotUtf8, "not UTF-8 text".to_owned()),
        CutError::Read(err) => (
            ProblemCode::UnreadableFile,
            format!("cannot read: {err}; lb reads it again at its next change"),
        ),
    }
}
