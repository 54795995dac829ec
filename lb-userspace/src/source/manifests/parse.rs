//! Reading Services and EndpointSlices out of a YAML stream.
//!
//! Users keep whole application manifests in the directory, so anything
//! that is not a Service or an EndpointSlice is skipped quietly, and one
//! broken document never hides the others: it becomes a problem and
//! reading goes on.

use k8s_openapi::{
    Resource,
    api::{core::v1::Service, discovery::v1::EndpointSlice},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use std::{borrow::Cow, sync::Arc};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    documents::TooManyDocuments,
    kinds,
    limits::Limits,
    memo::{DocumentMemo, TextKey},
    spans::{Cut, CutError, Middle, Placed, cut_reusing},
    text::{Text, bytes_text, read_range},
    yaml::{self, DocumentText},
};
use crate::{
    model::ProblemCode,
    source::{Slice, Snapshot, compact::Compact},
};

/// The namespace Kubernetes assumes when a manifest names none.
pub const DEFAULT_NAMESPACE: &str = "default";

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
    let mut memo = DocumentMemo::with_spans(documents.len(), spans);
    let mut finder = previous.finder();
    for (i, doc) in documents.iter().enumerate() {
        let objects = match doc.was {
            Some(at) => previous.objects(at),
            None => finder.find(i, &keys),
        };
        if let Some(objects) = objects {
            memo.reuse(keys[i], objects, &mut set);
            continue;
        }
        let place = format!("{source_name} (document {})", doc.number);
        let mut read = Snapshot::default();
        match document_text(text, &middle, doc) {
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
        memo.remember(keys[i], &read);
        set.extend(read);
    }
    set.attribute_to(source_name);
    (set, memo)
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

/// Reads one document and files what it holds into `set`.
fn parse_document(place: &str, text: DocumentText<'_>, limits: &Limits, set: &mut Snapshot) {
    let value = match yaml::parse_value(text, limits.max_depth) {
        Ok(value) => value,
        Err(err) => {
            let hint = match err.code {
                ProblemCode::TooDeep => {
                    "; nested deeper than --manifest-max-depth allows (raise it if this is meant)"
                }
                ProblemCode::YamlBudget => {
                    "; too many aliases or nodes for one document (a YAML bomb?)"
                }
                _ => "",
            };
            set.coded_problem(
                err.code,
                place,
                format!("invalid YAML: {}{hint}", err.message),
            );
            return;
        }
    };
    if value.is_null() {
        return;
    }
    dispatch(place, &value, Origin::Document(text), set);
}

/// Where an object's text comes from: deserializing from the document text
/// keeps the file line in error messages; items of a List only exist as
/// values.
#[derive(Clone, Copy)]
enum Origin<'a> {
    Document(DocumentText<'a>),
    ListItem,
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

fn dispatch(place: &str, value: &Value, origin: Origin<'_>, set: &mut Snapshot) {
    if !value.is_object() {
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
            if let Some(svc) = read_object::<Service>(place, value, origin, set) {
                set.services.push(Arc::new(svc));
            }
        }
        Kind::EndpointSlice => {
            if let Some(slice) = read_object::<EndpointSlice>(place, value, origin, set) {
                // Kept small from here on; the decoded object goes.
                set.slices.push(Arc::new(Slice::from(slice)));
            }
        }
        Kind::List => read_list(place, value, None, set),
        Kind::TypedList { api_version, kind } => {
            read_list(place, value, Some((api_version, kind)), set)
        }
        Kind::Retired(reason) => set.coded_problem(ProblemCode::RetiredApi, place, reason),
        Kind::Other => match kinds::near_miss(api_version, kind) {
            Some((known_version, known_kind)) => set.coded_warning(
                ProblemCode::UnknownKind,
                place,
                format!(
                    "apiVersion {api_version:?} kind {kind:?} is not a kind lb reads, so it is not served: \
                     did you mean apiVersion {known_version:?} kind {known_kind:?}?"
                ),
            ),
            None => {
                tracing::debug!(%place, api_version, kind, "skipping a kind lb does not use");
            }
        },
    }
}

fn str_field<'v>(value: &'v Value, key: &str) -> Option<&'v str> {
    value.get(key).and_then(Value::as_str)
}

/// Reads each item of a List as a document of its own. `item_kind` fills in
/// apiVersion and kind for typed lists, whose items carry neither.
fn read_list(place: &str, value: &Value, item_kind: Option<(&str, &str)>, set: &mut Snapshot) {
    let items = match value.get("items") {
        None | Some(Value::Null) => return,
        Some(Value::Array(items)) => items,
        Some(_) => {
            set.problem(place, "items: expected a list");
            return;
        }
    };
    for (index, item) in items.iter().enumerate() {
        let item_place = format!("{place} items[{index}]");
        let mut item = item.clone();
        if let (Some((api_version, kind)), Value::Object(map)) = (item_kind, &mut item) {
            map.entry("apiVersion").or_insert(api_version.into());
            map.entry("kind").or_insert(kind.into());
        }
        dispatch(&item_place, &item, Origin::ListItem, set);
    }
}

/// An object of a kind lb uses: metadata and namespace checked, deserialized.
trait Object: Resource + DeserializeOwned + Compact {
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
    origin: Origin<'_>,
    set: &mut Snapshot,
) -> Option<T> {
    let Some(name) = value_name(value) else {
        set.problem(place, format!("{} has no metadata.name", T::KIND));
        return None;
    };
    let namespace = value_namespace(value);
    let read = match origin {
        Origin::Document(text) => yaml::from_parsed_document::<T>(value, text),
        Origin::ListItem => yaml::from_value::<T>(value),
    };
    match read {
        Ok(mut object) => {
            object.compact();
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
