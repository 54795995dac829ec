//! A window gives the bytes a slice of the text would, whichever way it
//! moves and however far it must read again; a file's text is its bytes
//! without a byte order mark, read as long as it was when opened.

use std::{fs, io::Write};

use proptest::prelude::*;

use super::{
    file::{FileError, read_manifest_file},
    limits::Limits,
    memo::DocumentMemo,
    text::{FileText, Text, Toward, Window, bytes_text, read_range},
};
use crate::model::ProblemCode;

/// 700 kB of lines of every length, so that reads cross the window's
/// 64 kB both ways.
fn long_text() -> Vec<u8> {
    let mut text = Vec::new();
    let mut i = 0usize;
    while text.len() < 700 << 10 {
        let len = (i * 7919) % 300;
        text.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, len));
        text.push(b'\n');
        i += 1;
    }
    text
}

proptest! {
    #[test]
    fn a_window_reads_what_a_slice_holds(
        asks in prop::collection::vec((0.0..1.0f64, 0..100_000usize, any::<bool>()), 1..40),
    ) {
        let text = long_text();
        let mut window = Window::new(text.as_slice());
        for (at, len, ahead) in asks {
            let start = (at * text.len() as f64) as usize;
            let end = (start + len).min(text.len());
            let toward = if ahead { Toward::End } else { Toward::Start };
            prop_assert_eq!(window.get(start..end, toward).unwrap(), &text[start..end]);
        }
    }
}

#[test]
fn a_line_is_read_to_its_newline_however_long() {
    let text = long_text();
    let mut window = Window::new(text.as_slice());
    let mut at = 0;
    while at < text.len() {
        let line = window.line(at, Toward::End).unwrap().to_vec();
        let end = at + memchr::memchr(b'\n', &text[at..]).map_or(text.len() - at, |n| n + 1);
        assert_eq!(line, &text[at..end]);
        at = end;
    }
    // The last line of a text without a final newline.
    let mut window = Window::new(b"a\nlast".as_slice());
    assert_eq!(window.line(2, Toward::Start).unwrap(), b"last");
}

#[test]
fn a_file_text_skips_the_byte_order_mark() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bom.yaml");
    fs::write(&path, "\u{feff}kind: Service\n").unwrap();
    let file = fs::File::open(&path).unwrap();
    let len = file.metadata().unwrap().len();
    let text = FileText::new(file, len).unwrap();
    assert_eq!(text.len(), "kind: Service\n".len());
    assert_eq!(read_range(&text, 0..4).unwrap(), b"kind");
    assert_eq!(bytes_text("\u{feff}x".as_bytes()), b"x");
    // Past its length (as opened) is an error, not a short read.
    assert!(read_range(&text, 10..20).is_err());
}

/// A file that is shorter than when it was opened (truncated while read)
/// is an error of its read; one that grew is read no further.
#[test]
fn a_file_cut_short_while_read_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.yaml");
    fs::write(&path, "a: 1\nb: 2\n").unwrap();
    let file = fs::File::open(&path).unwrap();
    let text = FileText::new(file, 10).unwrap();
    fs::write(&path, "a: 1\n").unwrap();
    assert!(read_range(&text, 0..10).is_err());
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"b: 2\nc: 3\n")
        .unwrap();
    assert_eq!(read_range(&text, 0..10).unwrap(), b"a: 1\nb: 2\n");
    assert!(read_range(&text, 0..11).is_err());
}

/// A file read afresh whose text is not UTF-8 is refused as such, at any
/// read (the check moved from the read to the cut).
#[test]
fn a_file_not_utf8_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.yaml");
    fs::write(&path, b"kind: Service\nmetadata: {name: caf\xe9}\n").unwrap();
    let read = read_manifest_file(
        &path,
        "latin1.yaml",
        &Limits::default(),
        &DocumentMemo::default(),
    );
    let codes: Vec<ProblemCode> = read.snapshot.problems.iter().map(|p| p.code).collect();
    assert_eq!(codes, [ProblemCode::NotUtf8]);
    assert_eq!(FileError::Changed.code(), ProblemCode::UnreadableFile);
}
