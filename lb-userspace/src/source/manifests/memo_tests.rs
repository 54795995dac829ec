//! sync: a file read again reuses the objects of its unchanged documents,
//! and gives exactly what a fresh read of its new text gives.

use std::{fs, sync::Arc};

use super::{Limits, Loader, memo::DocumentMemo, parse::parse_documents_reusing, parse_documents};

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
