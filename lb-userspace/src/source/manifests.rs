//! Reading Services and EndpointSlices from a directory of manifests, for
//! standalone mode (no API server) and for `lb` dry runs.
//!
//! Users keep whole application manifests there, so anything that is not a
//! Service or an EndpointSlice is skipped quietly, and one broken document
//! never hides the others: it becomes a [`Problem`] and loading goes on.

use std::{
    fs,
    path::{Path, PathBuf},
};

use k8s_openapi::{
    Resource,
    api::{core::v1::Service, discovery::v1::EndpointSlice},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::model::Problem;

/// The namespace Kubernetes assumes when a manifest names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// What a set of manifests holds that the load balancer cares about.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ManifestSet {
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
    pub problems: Vec<Problem>,
}

impl ManifestSet {
    /// Appends another set, keeping order (the first definition of an object
    /// stays first, which is what later deduplication relies on).
    pub fn extend(&mut self, other: ManifestSet) {
        self.services.extend(other.services);
        self.slices.extend(other.slices);
        self.problems.extend(other.problems);
    }

    /// Both sets, `self` first.
    pub fn merge(mut self, other: ManifestSet) -> ManifestSet {
        self.extend(other);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.slices.is_empty() && self.problems.is_empty()
    }

    fn problem(&mut self, object: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(Problem {
            object: object.into(),
            reason: reason.into(),
        });
    }
}

/// Why a manifest file could not be used at all.
#[derive(Debug, thiserror::Error)]
enum FileError {
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    #[error("not UTF-8 text")]
    NotUtf8,
}

/// Loads every `*.yaml` / `*.yml` file directly in `dir`, in name order so the
/// result (and which of two duplicates wins downstream) is the same on every
/// run. Hidden files and editor leftovers are ignored: an editor's temporary
/// copy must not double every object while a file is being edited.
pub fn load_dir(dir: &Path) -> ManifestSet {
    let mut set = ManifestSet::default();
    let files = match manifest_files(dir) {
        Ok(files) => files,
        Err(err) => {
            set.problem(
                dir.display().to_string(),
                format!("cannot list directory: {err}"),
            );
            return set;
        }
    };
    for path in files {
        let name = display_name(&path);
        match read_text(&path) {
            Ok(text) => set.extend(parse_documents(&name, &text)),
            Err(err) => set.problem(name, err.to_string()),
        }
    }
    set
}

/// The manifest files of `dir`, sorted by name.
fn manifest_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        // `metadata` follows symlinks, as ConfigMap mounts are made of them.
        if is_manifest_name(&name) && fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// `*.yaml` or `*.yml`, not hidden (which also covers emacs' `.#x` locks and
/// vim's `.x.swp`), not a backup (`x~`).
fn is_manifest_name(name: &str) -> bool {
    if name.starts_with('.') || name.ends_with('~') || name.starts_with('#') {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml")
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn read_text(path: &Path) -> Result<String, FileError> {
    let bytes = fs::read(path).map_err(FileError::Read)?;
    String::from_utf8(bytes).map_err(|_| FileError::NotUtf8)
}

/// Parses a YAML stream that may hold several documents. `source_name` names
/// the stream in problems ("web.yaml (document 2)").
pub fn parse_documents(source_name: &str, text: &str) -> ManifestSet {
    let mut set = ManifestSet::default();
    for doc in split_documents(text) {
        let place = format!("{source_name} (document {})", doc.number);
        parse_document(&place, &doc, &mut set);
    }
    set
}

/// One YAML document of a stream, cut out of the text.
#[derive(Debug, PartialEq)]
struct Document {
    /// 1-based, as a user counts documents in the file.
    number: usize,
    /// 1-based line of the file where `text` starts.
    first_line: usize,
    text: String,
}

impl Document {
    /// The document text preceded by blank lines, so the YAML parser's line
    /// numbers are the file's.
    fn text_at_file_lines(&self) -> String {
        "\n".repeat(self.first_line.saturating_sub(1)) + &self.text
    }
}

/// Splits a YAML stream at its document markers. Each document is parsed on
/// its own, so a syntax error in one cannot take the following ones with it
/// (serde_yaml's multi-document reader stops at the first error). A `---` or
/// `...` at column 0 always ends a document in YAML, even inside a block
/// scalar, so cutting by lines is exact.
fn split_documents(text: &str) -> Vec<Document> {
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
fn start_marker(line: &str) -> Option<&str> {
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

/// Reads one document and files what it holds into `set`.
fn parse_document(place: &str, doc: &Document, set: &mut ManifestSet) {
    let text = doc.text_at_file_lines();
    let value: Value = match serde_yaml::from_str(&text) {
        Ok(value) => value,
        Err(err) => {
            set.problem(place, format!("invalid YAML: {err}"));
            return;
        }
    };
    if value.is_null() {
        return;
    }
    dispatch(place, &value, Source::Text(&text), set);
}

/// Where an object's text comes from: deserializing from the document text
/// keeps serde_yaml's field path and file line in error messages; items of a
/// List only exist as values.
#[derive(Clone, Copy)]
enum Source<'a> {
    Text(&'a str),
    Value,
}

/// The kinds this module reads.
enum Kind {
    Service,
    EndpointSlice,
    List,
    /// A typed list (`ServiceList`), whose items may omit apiVersion/kind.
    TypedList {
        api_version: &'static str,
        kind: &'static str,
    },
    /// A kind lb would use, in an API version Kubernetes no longer serves.
    Retired(&'static str),
    Other,
}

fn kind_of(api_version: &str, kind: &str) -> Kind {
    match (api_version, kind) {
        (Service::API_VERSION, Service::KIND) => Kind::Service,
        (EndpointSlice::API_VERSION, EndpointSlice::KIND) => Kind::EndpointSlice,
        ("v1", "List") => Kind::List,
        ("v1", "ServiceList") => Kind::TypedList {
            api_version: Service::API_VERSION,
            kind: Service::KIND,
        },
        ("discovery.k8s.io/v1", "EndpointSliceList") => Kind::TypedList {
            api_version: EndpointSlice::API_VERSION,
            kind: EndpointSlice::KIND,
        },
        ("discovery.k8s.io/v1beta1", "EndpointSlice") => Kind::Retired(
            "discovery.k8s.io/v1beta1 EndpointSlice was removed in Kubernetes 1.25; use discovery.k8s.io/v1",
        ),
        _ => Kind::Other,
    }
}

fn dispatch(place: &str, value: &Value, source: Source<'_>, set: &mut ManifestSet) {
    if !value.is_mapping() {
        set.problem(
            place,
            "not a Kubernetes object: expected a mapping with apiVersion and kind",
        );
        return;
    }
    let (Some(api_version), Some(kind)) =
        (str_field(value, "apiVersion"), str_field(value, "kind"))
    else {
        set.problem(
            place,
            "not a Kubernetes object: apiVersion or kind is missing",
        );
        return;
    };
    match kind_of(api_version, kind) {
        Kind::Service => {
            if let Some(svc) = read_object::<Service>(place, value, source, set) {
                set.services.push(svc);
            }
        }
        Kind::EndpointSlice => {
            if let Some(slice) = read_object::<EndpointSlice>(place, value, source, set) {
                set.slices.push(slice);
            }
        }
        Kind::List => read_list(place, value, None, set),
        Kind::TypedList { api_version, kind } => {
            read_list(place, value, Some((api_version, kind)), set)
        }
        Kind::Retired(reason) => set.problem(place, reason),
        Kind::Other => {
            tracing::debug!(%place, api_version, kind, "skipping a kind lb does not use");
        }
    }
}

fn str_field<'v>(value: &'v Value, key: &str) -> Option<&'v str> {
    value.get(key).and_then(Value::as_str)
}

/// Reads each item of a List as a document of its own. `item_kind` fills in
/// apiVersion and kind for typed lists, whose items carry neither.
fn read_list(place: &str, value: &Value, item_kind: Option<(&str, &str)>, set: &mut ManifestSet) {
    let items = match value.get("items") {
        None | Some(Value::Null) => return,
        Some(Value::Sequence(items)) => items,
        Some(_) => {
            set.problem(place, "items: expected a list");
            return;
        }
    };
    for (index, item) in items.iter().enumerate() {
        let item_place = format!("{place} items[{index}]");
        let mut item = item.clone();
        if let (Some((api_version, kind)), Value::Mapping(map)) = (item_kind, &mut item) {
            map.entry("apiVersion".into()).or_insert(api_version.into());
            map.entry("kind".into()).or_insert(kind.into());
        }
        dispatch(&item_place, &item, Source::Value, set);
    }
}

/// An object of a kind lb uses: metadata and namespace checked, deserialized.
trait Object: Resource + DeserializeOwned {
    fn meta_mut(&mut self) -> &mut ObjectMeta;
}

impl Object for Service {
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl Object for EndpointSlice {
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Deserializes a Service or EndpointSlice, reporting a missing name or wrong
/// field types as a problem. Once the name is known the problem is filed
/// under the object ("Service ns/name"), which is what a user searches for.
fn read_object<T: Object>(
    place: &str,
    value: &Value,
    source: Source<'_>,
    set: &mut ManifestSet,
) -> Option<T> {
    let Some(name) = value_name(value) else {
        set.problem(place, format!("{} has no metadata.name", T::KIND));
        return None;
    };
    let namespace = value_namespace(value);
    match deserialize::<T>(value, source) {
        Ok(mut object) => {
            let meta = object.meta_mut();
            if meta.namespace.as_deref().is_none_or(str::is_empty) {
                meta.namespace = Some(DEFAULT_NAMESPACE.to_owned());
            }
            Some(object)
        }
        Err(reason) => {
            set.problem(
                format!("{} {namespace}/{name}", T::KIND),
                format!("in {place}: {reason}"),
            );
            None
        }
    }
}

fn value_name(value: &Value) -> Option<&str> {
    value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty())
}

fn value_namespace(value: &Value) -> &str {
    value
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
}

/// Deserializes from text when there is text (errors then carry the field
/// path and the file line); a List item is re-serialized for the path, and
/// its meaningless line number is cut off.
fn deserialize<T: DeserializeOwned>(value: &Value, source: Source<'_>) -> Result<T, String> {
    match source {
        Source::Text(text) => serde_yaml::from_str(text).map_err(|err| err.to_string()),
        Source::Value => {
            let text = serde_yaml::to_string(value).map_err(|err| err.to_string())?;
            serde_yaml::from_str(&text).map_err(|err| without_location(&err))
        }
    }
}

fn without_location(err: &serde_yaml::Error) -> String {
    let message = err.to_string();
    let Some(location) = err.location() else {
        return message;
    };
    let suffix = format!(" at line {} column {}", location.line(), location.column());
    match message.strip_suffix(&suffix) {
        Some(stripped) => stripped.to_owned(),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let docs = split_documents(text);
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
        let docs = split_documents(SERVICE_A);
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].number, 1);
        assert_eq!(docs[0].first_line, 1);
    }

    #[test]
    fn marker_with_inline_content_keeps_the_content() {
        let docs = split_documents("--- {a: 1}\n");
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
        // The broken flow sequence is on line 12 of the file, not of the
        // document; libyaml reports where it noticed (the next lines).
        assert!(reason.contains("line 1"), "{reason}");
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
        assert!(reason.contains("spec.ports[0].port"), "{reason}");
        assert!(reason.contains("line 8"), "{reason}");
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
        let set = load_dir(dir.path());
        assert_eq!(service_names(&set), vec!["default/a", "default/b"]);
        assert_eq!(set.problems.len(), 1);
        assert_eq!(set.problems[0].object, "z.yaml");
        assert_eq!(set.problems[0].reason, "not UTF-8 text");
    }

    #[test]
    fn load_dir_of_missing_directory_is_a_problem() {
        let set = load_dir(Path::new("/nonexistent/lb-manifests"));
        assert!(set.services.is_empty());
        assert_eq!(set.problems.len(), 1);
        assert!(set.problems[0].reason.starts_with("cannot list directory"));
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
}
