use std::{fs, path::Path};

use super::{
    ManifestDir, ManifestSet,
    dir::is_manifest_name,
    documents::{split_documents, start_marker},
    load_dir, parse_documents,
};

fn problem_objects(set: &ManifestSet) -> Vec<&str> {
    set.problems.iter().map(|p| p.object.as_str()).collect()
}

fn service_names(set: &ManifestSet) -> Vec<String> {
    set.services
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s.metadata.namespace.as_deref().unwrap_or("?"),
                s.metadata.name.as_deref().unwrap_or("?")
            )
        })
        .collect()
}

const SERVICE_A: &str = "apiVersion: v1
kind: Service
metadata:
  name: a
spec:
  clusterIP: 10.96.0.10
  ports:
  - port: 80
";

#[test]
fn splits_documents_and_numbers_them_as_users_count() {
    let text = "# leading comment\n---\na: 1\n---\n\n---\nb: 2\n...\n";
    let docs = split_documents(text, 10).expect("within the limit");
    let summary: Vec<_> = docs
        .iter()
        .map(|d| (d.number, d.first_line, d.text.trim().to_owned()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, 2, "a: 1".to_owned()),
            (2, 4, String::new()),
            (3, 6, "b: 2".to_owned()),
        ]
    );
}

#[test]
fn document_without_marker_is_document_one() {
    let docs = split_documents(SERVICE_A, 10).expect("within the limit");
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].number, 1);
    assert_eq!(docs[0].first_line, 1);
}

#[test]
fn marker_with_inline_content_keeps_the_content() {
    let docs = split_documents("--- {a: 1}\n", 10).expect("within the limit");
    assert_eq!(docs[0].text, " {a: 1}\n");
    assert!(start_marker("----").is_none());
}

#[test]
fn reads_service_and_defaults_namespace() {
    let set = parse_documents("a.yaml", SERVICE_A);
    assert!(set.problems.is_empty(), "{:?}", set.problems);
    assert_eq!(service_names(&set), vec!["default/a"]);
}

#[test]
fn skips_other_kinds_and_empty_documents() {
    let text = format!(
        "---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec: {{}}\n---\n{SERVICE_A}"
    );
    let set = parse_documents("app.yaml", &text);
    assert!(set.problems.is_empty(), "{:?}", set.problems);
    assert_eq!(service_names(&set), vec!["default/a"]);
}

#[test]
fn bad_yaml_names_file_document_and_line() {
    let text = format!(
        "{SERVICE_A}---\napiVersion: v1\nkind: Service\nmetadata: [unclosed\n---\n{SERVICE_A}"
    );
    let set = parse_documents("web.yaml", &text);
    assert_eq!(set.services.len(), 2);
    assert_eq!(problem_objects(&set), vec!["web.yaml (document 2)"]);
    let reason = &set.problems[0].reason;
    assert!(reason.starts_with("invalid YAML"), "{reason}");
    // The broken flow sequence opens on line 12 of the file (line 3 of
    // its document).
    assert!(reason.contains("at line 12, column 11"), "{reason}");
}

#[test]
fn wrong_field_type_names_the_object_and_the_field() {
    let text = "apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  ports:
  - port: eighty
";
    let set = parse_documents("web.yaml", text);
    assert!(set.services.is_empty());
    assert_eq!(problem_objects(&set), vec!["Service shop/web"]);
    let reason = &set.problems[0].reason;
    assert!(reason.contains("web.yaml (document 1)"), "{reason}");
    assert!(
        reason.contains("spec.ports[0].port: invalid i32 at line 8, column 11"),
        "{reason}"
    );
}

#[test]
fn missing_name_is_a_problem() {
    let text = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  namespace: x\naddressType: IPv4\n";
    let set = parse_documents("s.yaml", text);
    assert!(set.slices.is_empty());
    assert_eq!(set.problems.len(), 1);
    assert_eq!(set.problems[0].object, "s.yaml (document 1)");
    assert_eq!(set.problems[0].reason, "EndpointSlice has no metadata.name");
}

#[test]
fn non_object_documents_are_problems() {
    let set = parse_documents("x.yaml", "just a string\n---\n- 1\n---\nfoo: bar\n");
    assert_eq!(
        problem_objects(&set),
        vec![
            "x.yaml (document 1)",
            "x.yaml (document 2)",
            "x.yaml (document 3)"
        ]
    );
}

#[test]
fn list_items_are_read_and_typed_lists_fill_kind() {
    let text = "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a, namespace: n}
  spec: {clusterIP: 10.96.0.1}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: c}
- apiVersion: v1
  kind: Service
  metadata: {name: bad}
  spec: {ports: [{port: x}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSliceList
items:
- metadata: {name: a-1, namespace: n}
  addressType: IPv4
  endpoints: []
";
    let set = parse_documents("l.yaml", text);
    assert_eq!(service_names(&set), vec!["n/a"]);
    assert_eq!(set.slices.len(), 1);
    assert_eq!(problem_objects(&set), vec!["Service default/bad"]);
    let reason = &set.problems[0].reason;
    assert!(reason.contains("l.yaml (document 1) items[2]"), "{reason}");
    assert!(reason.contains("spec.ports[0].port"), "{reason}");
    assert!(!reason.contains(" at line "), "{reason}");
}

#[test]
fn retired_endpoint_slice_version_is_a_problem() {
    let text = "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\n";
    let set = parse_documents("old.yaml", text);
    assert!(set.slices.is_empty());
    assert_eq!(problem_objects(&set), vec!["old.yaml (document 1)"]);
    assert!(set.problems[0].reason.contains("use discovery.k8s.io/v1"));
}

#[test]
fn manifest_names() {
    assert!(is_manifest_name("web.yaml"));
    assert!(is_manifest_name("web.YML"));
    assert!(!is_manifest_name(".#web.yaml"));
    assert!(!is_manifest_name(".web.yaml"));
    assert!(!is_manifest_name("web.yaml~"));
    assert!(!is_manifest_name("web.json"));
    assert!(!is_manifest_name("#web.yaml#"));
}

#[test]
fn load_dir_reads_sorted_files_and_reports_unreadable_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &[u8]| {
        fs::write(dir.path().join(name), text).expect("write fixture");
    };
    write("b.yaml", SERVICE_A.replace("name: a", "name: b").as_bytes());
    write("a.yml", SERVICE_A.as_bytes());
    write(
        ".#a.yaml",
        SERVICE_A.replace("name: a", "name: hidden").as_bytes(),
    );
    write(
        "c.yaml~",
        SERVICE_A.replace("name: a", "name: backup").as_bytes(),
    );
    write("notes.txt", b"not yaml");
    write("z.yaml", b"\xff\xfe binary");
    fs::create_dir(dir.path().join("sub.yaml")).expect("mkdir");
    let set = load_dir(dir.path()).expect("the directory is readable");
    assert_eq!(service_names(&set), vec!["default/a", "default/b"]);
    assert_eq!(set.problems.len(), 1);
    assert_eq!(set.problems[0].object, "z.yaml");
    assert_eq!(set.problems[0].reason, "not UTF-8 text");
}

#[test]
fn missing_directory_is_an_error_not_an_empty_snapshot() {
    let err = load_dir(Path::new("/nonexistent/lb-manifests")).expect_err("nothing to list");
    let message = err.to_string();
    assert!(message.contains("/nonexistent/lb-manifests"), "{message}");
    assert!(message.contains("check that it exists"), "{message}");
}

/// The tests run as root, whom permissions do not stop: a file where the
/// directory should be is what an unreadable directory looks like then.
#[test]
fn unlistable_directory_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("manifests");
    fs::write(&file, SERVICE_A).expect("write fixture");
    assert!(load_dir(&file).is_err());
}

/// The agent's case: the directory goes away after the watch started (a
/// ConfigMap mount being swapped, a directory being replaced).
#[test]
fn watched_directory_that_goes_away_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("manifests");
    fs::create_dir(&path).expect("mkdir");
    fs::write(path.join("a.yaml"), SERVICE_A).expect("write fixture");
    let source = ManifestDir::watch(&path).expect("watch");
    assert_eq!(
        service_names(&source.loader().load().expect("readable")),
        vec!["default/a"]
    );
    fs::remove_dir_all(&path).expect("remove");
    assert!(source.loader().load().is_err());
}

#[test]
fn list_items_keep_what_yaml_says_a_string_is() {
    let text = "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata:
    name: a
    labels: {mode: \"0755\", release: 1.2, big: 1_000, flag: yes}
  spec: {clusterIP: 10.96.0.1}
";
    let set = parse_documents("l.yaml", text);
    assert!(set.problems.is_empty(), "{:?}", set.problems);
    let labels = set.services[0].metadata.labels.clone().expect("labels");
    let labels: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        labels,
        vec![
            ("big", "1_000"),
            ("flag", "yes"),
            ("mode", "0755"),
            ("release", "1.2")
        ]
    );
}

#[test]
fn sets_merge_in_order() {
    let a = parse_documents("a", SERVICE_A);
    let b = parse_documents("b", &SERVICE_A.replace("name: a", "name: b"));
    let merged = a.merge(b);
    assert_eq!(service_names(&merged), vec!["default/a", "default/b"]);
    assert!(!merged.is_empty());
    assert!(ManifestSet::default().is_empty());
}

/// A file of many documents: its objects and problems come in the file's
/// order, each problem at its own document and line.
#[test]
fn many_documents_keep_the_files_order() {
    let docs: Vec<String> = (0..1_000)
        .map(|i| match i % 97 {
            // Broken YAML, on the document's third line.
            3 => "apiVersion: v1\nkind: Service\nmetadata: [unclosed\n".to_owned(),
            _ => format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: s{i}\nspec:\n  clusterIP: 10.96.0.10\n"),
        })
        .collect();
    let text = docs.join("---\n");
    let set = parse_documents("many.yaml", &text);
    let expected: Vec<String> = (0..1_000)
        .filter(|i| i % 97 != 3)
        .map(|i| format!("default/s{i}"))
        .collect();
    assert_eq!(service_names(&set), expected);
    let broken: Vec<usize> = (0..1_000).filter(|i| i % 97 == 3).collect();
    let places: Vec<String> = (broken.iter())
        .map(|i| format!("many.yaml (document {})", i + 1))
        .collect();
    assert_eq!(problem_objects(&set), places);
    for (problem, &i) in set.problems.iter().zip(&broken) {
        // A broken document's flow sequence opens on its third line.
        let start: usize = docs[..i].iter().map(|d| d.len() + "---\n".len()).sum();
        let line = text[..start].matches('\n').count() + 3;
        let at = format!("at line {line}, column 11");
        assert!(problem.reason.contains(&at), "{at}: {}", problem.reason);
    }
}
