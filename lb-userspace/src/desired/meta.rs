//! Object identity: the namespace defaulting the API server would have done,
//! and the order objects are visited in.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The objects sorted by namespace and name, so that the result does not
/// depend on input order (a reflector's store has none).
pub(super) fn sorted_by_name<T>(objects: &[T], meta: impl Fn(&T) -> &ObjectMeta) -> Vec<&T> {
    let mut sorted: Vec<&T> = objects.iter().collect();
    // Stable: of two objects with the same name, the first given stays first.
    sorted.sort_by(|a, b| {
        let (a, b) = (meta(a), meta(b));
        (namespace_of(&a.namespace), &a.name).cmp(&(namespace_of(&b.namespace), &b.name))
    });
    sorted
}

pub(super) fn namespace_of(namespace: &Option<String>) -> &str {
    namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default")
}
