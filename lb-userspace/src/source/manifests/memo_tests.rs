//! sync: a file read again reuses the objects of its unchanged documents,
//! and gives exactly what a fresh read of its new text gives.

use std::{fs, sync::Arc};

use super::{
    Limits, Loader, ManifestSet,
    documents::split_documents,
    memo::{DocumentMemo, TextKey},
    parse_documents,
    stream::parse_documents_reusing,
};

fn service(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: app}}\n\
         spec:\n  clusterIP: {ip}\n  ports:\n  - {{name: http, port: 80}}\n"
    )
}

fn slice(service: &str, pod_ip: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {service}-1, namespace: app, labels: {{kubernetes.io/service-name: {service}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080}}]\n\
         endpoints:\n- addresses: [{pod_ip}]\n  conditions: {{ready: true}}\n"
    )
}

fn stream(docs: &[String]) -> String {
    docs.join("---\n")
}

#[test]
fn a_rewrite_parses_only_its_changed_documents_and_reads_as_a_fresh_parse() {
    let before = stream(&[
        service("a", "10.96.0.10"),
        slice("a", "10.0.0.1"),
        service("b", "10.96.0.11"),
        slice("b", "10.0.0.2"),
    ]);
    let (first, memo) = parse_documents_reusing(
        "x.yaml",
        &before,
        &Limits::default(),
        &DocumentMemo::default(),
    );
    assert_eq!(memo.len(), 4);
    let after = stream(&[
        service("a", "10.96.0.10"),
        slice("a", "10.0.0.9"),
        service("b", "10.96.0.11"),
        slice("b", "10.0.0.2"),
    ]);
    let (second, next) = parse_documents_reusing("x.yaml", &after, &Limits::default(), &memo);
    assert_eq!(
        second,
        parse_documents("x.yaml", &after),
        "as a fresh parse"
    );
    assert!(Arc::ptr_eq(&first.services[0], &second.services[0]));
    assert!(Arc::ptr_eq(&first.services[1], &second.services[1]));
    assert!(
        Arc::ptr_eq(&first.slices[1], &second.slices[1]),
        "b's slice kept"
    );
    assert!(
        !Arc::ptr_eq(&first.slices[0], &second.slices[0]),
        "a's slice read again"
    );
    assert_eq!(
        second.slices[0].endpoints[0].address.as_deref(),
        Some("10.0.0.9")
    );
    assert_eq!(next.len(), 4, "the memo follows the file's new text");
}

/// A document with a problem is never remembered: its problem (which
/// names the document's number and the file's line) comes from a fresh
/// read each time, also once the document moved in the file.
#[test]
fn documents_with_problems_are_read_again_where_they_now_are() {
    let broken =
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {ports: [{port: x}]}\n"
            .to_owned();
    let before = stream(&[service("a", "10.96.0.10"), broken.clone()]);
    let (first, memo) = parse_documents_reusing(
        "x.yaml",
        &before,
        &Limits::default(),
        &DocumentMemo::default(),
    );
    assert_eq!(first.problems.len(), 1);
    assert_eq!(memo.len(), 1, "only the good document");
    let after = stream(&[
        service("c", "10.96.0.12"),
        service("a", "10.96.0.10"),
        broken,
    ]);
    let (second, _) = parse_documents_reusing("x.yaml", &after, &Limits::default(), &memo);
    assert_eq!(second, parse_documents("x.yaml", &after));
    assert!(
        second.problems[0].reason.contains("document 3"),
        "{:?}",
        second.problems
    );
}

/// Through the watched directory's loader: a file renamed over with one
/// slice changed serves the new slice and the same objects for the rest.
#[test]
fn a_reloaded_file_shares_its_unchanged_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.yaml");
    let write = |pod: &str| {
        let staged = dir.path().join(".app.yaml.new");
        let text = stream(&[
            service("a", "10.96.0.10"),
            slice("a", pod),
            service("b", "10.96.0.11"),
        ]);
        fs::write(&staged, text).expect("write");
        fs::rename(&staged, &path).expect("rename");
    };
    write("10.0.0.1");
    let loader = Loader::new(dir.path(), Limits::default());
    let first = loader.load().expect("listable");
    write("10.0.0.2");
    let second = loader.load().expect("listable");
    assert_eq!(second, super::load_dir(dir.path()).expect("listable"));
    assert_eq!(
        second.slices[0].endpoints[0].address.as_deref(),
        Some("10.0.0.2")
    );
    assert!(Arc::ptr_eq(&first.services[1], &second.services[1]));
}

fn broken(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: x}}]}}\n"
    )
}

/// Each document after a marker of its own: a document's text is what
/// follows its marker, so the first one of [`stream`] would differ from
/// itself placed anywhere else.
fn marked(docs: &[String]) -> String {
    docs.iter().map(|doc| format!("---\n{doc}")).collect()
}

/// A read of `before`, then of `after` with the memo of the first; the
/// second is checked against a fresh parse.
fn reread(before: &[String], after: &[String]) -> (ManifestSet, ManifestSet) {
    let limits = Limits::default();
    let (first, memo) =
        parse_documents_reusing("x.yaml", &marked(before), &limits, &DocumentMemo::default());
    let (second, _) = parse_documents_reusing("x.yaml", &marked(after), &limits, &memo);
    assert_eq!(
        second,
        parse_documents("x.yaml", &marked(after)),
        "as a fresh parse"
    );
    (first, second)
}

/// For each Service of `second` (every document of these tests gives one,
/// or a problem), whether it is shared with `first`.
fn shared(first: &ManifestSet, second: &ManifestSet) -> Vec<bool> {
    (second.services.iter())
        .map(|s| first.services.iter().any(|f| Arc::ptr_eq(f, s)))
        .collect()
}

/// Documents added or removed before others move them: the others are
/// found where they moved to, and shared.
#[test]
fn documents_that_moved_are_found_where_they_are_now() {
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|n| service(n, "10.96.0.10"));
    let before = [a.clone(), b.clone(), c.clone()];
    let inserted = [d.clone(), a.clone(), b.clone(), c.clone()];
    let (first, second) = reread(&before, &inserted);
    assert_eq!(shared(&first, &second), [false, true, true, true]);
    let removed = [a.clone(), c.clone()];
    let (first, second) = reread(&before, &removed);
    assert_eq!(shared(&first, &second), [true, true]);
    let reversed = [d, c.clone(), b.clone(), a.clone()];
    let (first, second) = reread(&before, &reversed);
    assert_eq!(shared(&first, &second), [false, true, true, true]);
    // Two documents swapped look like two changed in place (the ones
    // around them are where they were): read again, rather than a table
    // of all the others made to find them.
    let swapped = [c, b, a];
    let (first, second) = reread(&before, &swapped);
    assert_eq!(shared(&first, &second), [false, true, false]);
}

/// A document changed where it is, first, in the middle or last: only it
/// is read again.
#[test]
fn a_document_changed_in_place_is_the_only_one_read_again() {
    let names = ["a", "b", "c"];
    let before = names.map(|n| service(n, "10.96.0.10"));
    for changed in 0..names.len() {
        let mut after = before.clone();
        after[changed] = service(names[changed], "10.96.0.99");
        let (first, second) = reread(&before, &after);
        let expected: Vec<bool> = (0..names.len()).map(|i| i != changed).collect();
        assert_eq!(
            shared(&first, &second),
            expected,
            "document {changed} changed"
        );
    }
}

/// The same text twice, and a text with a problem that moves: the first
/// is shared, the second read again where it now is (its problem names
/// its new document number).
#[test]
fn repeated_texts_are_shared_and_problems_read_again() {
    let a = service("a", "10.96.0.10");
    let before = [a.clone(), broken("bad"), a.clone()];
    let after = [broken("bad"), a.clone(), a.clone(), a.clone()];
    let (first, second) = reread(&before, &after);
    assert_eq!(shared(&first, &second), [true, true, true]);
    assert!(second.problems[0].reason.contains("document 1"));
}

/// How many documents of `after` a read with the memo of `before` looks
/// up in the table of `before`'s documents, and how many it reuses.
fn searched(before: &[String], after: &[String]) -> (usize, usize) {
    let limits = Limits::default();
    let (_, memo) =
        parse_documents_reusing("x.yaml", &marked(before), &limits, &DocumentMemo::default());
    let text = marked(after);
    let docs = split_documents(&text, limits.max_documents).expect("within the limit");
    let keys: Vec<TextKey> = docs.iter().map(|d| TextKey::of(d.text)).collect();
    let mut finder = memo.finder();
    let reused = (0..keys.len())
        .filter(|&i| finder.find(i, &keys).is_some())
        .count();
    (finder.looked_up, reused)
}

/// The table is for documents out of place: a change in place asks it
/// nothing, a document added or removed asks it for one or two documents
/// (then the others are found where they moved to), not for all.
#[test]
fn only_documents_out_of_place_are_looked_up() {
    let before: Vec<String> = (0..1_000)
        .map(|i| service(&format!("s{i}"), "10.96.0.10"))
        .collect();
    let mut changed = before.clone();
    changed[500] = service("s500", "10.96.0.99");
    assert_eq!(searched(&before, &changed), (0, 999));
    let mut inserted = before.clone();
    inserted.insert(0, service("new", "10.96.0.10"));
    assert_eq!(searched(&before, &inserted), (2, 1_000));
    let mut removed = before.clone();
    removed.remove(300);
    assert_eq!(searched(&before, &removed), (1, 999));
}

proptest::proptest! {
    /// Any rewrite of a file, from a pool of documents (some broken, some
    /// repeated), reads as a fresh parse of the new text.
    #[test]
    fn any_rewrite_reads_as_a_fresh_parse(
        before in proptest::collection::vec(0..8usize, 0..12),
        after in proptest::collection::vec(0..8usize, 0..12),
    ) {
        let pool = |i: usize| match i {
            0 | 1 => broken(&format!("bad{i}")),
            _ => service(&format!("s{i}"), "10.96.0.10"),
        };
        let before: Vec<String> = before.into_iter().map(pool).collect();
        let after: Vec<String> = after.into_iter().map(pool).collect();
        reread(&before, &after);
    }

    /// One document added, removed or changed anywhere in a file of
    /// distinct documents (one maybe broken): every other document that
    /// was read without a problem is shared.
    #[test]
    fn one_edit_shares_every_other_document(
        count in 1..10usize,
        edit in 0..3u8,
        place in 0..10usize,
        broken_at in proptest::option::of(0..10usize),
    ) {
        let mut before: Vec<String> =
            (0..count).map(|i| service(&format!("s{i}"), "10.96.0.10")).collect();
        if let Some(at) = broken_at.filter(|&at| at < count) {
            before[at] = broken("bad");
        }
        let mut after = before.clone();
        match edit {
            0 => after.insert(place % (count + 1), service("new", "10.96.0.10")),
            1 => {
                after.remove(place % count);
            }
            _ => after[place % count] = service("changed", "10.96.0.99"),
        }
        let (first, second) = reread(&before, &after);
        let good_after = after.iter().filter(|d| !d.contains("port: x"));
        let expected: Vec<bool> = good_after.map(|d| before.contains(d)).collect();
        proptest::prop_assert_eq!(shared(&first, &second), expected);
    }
}
