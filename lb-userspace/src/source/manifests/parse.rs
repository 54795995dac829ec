//! Reading Services and EndpointSlices out of one YAML document.
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
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    kinds,
    limits::Limits,
    yaml::{self, DocumentText},
};
use crate::{
    model::ProblemCode,
    source::{Slice, Snapshot, compact::Compact},
};

/// The namespace Kubernetes assumes when a manifest names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Reads one document and files what it holds into `set`.
pub(super) fn parse_document(
    place: &str,
    text: DocumentText<'_>,
    limits: &Limits,
    set: &mut Snapshot,
) {
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
