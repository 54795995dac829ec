//! Near misses of the kinds lb reads. Other kinds (Deployments, ConfigMaps)
//! are skipped quietly, since users keep whole application manifests in the
//! directory; but `kind: service`, `kind: Services` or `apiVersion: v2` on a
//! Service is almost surely a Service the user meant lb to serve, and
//! skipping it without a word would hide a broken manifest.

use k8s_openapi::{
    Resource,
    api::{core::v1::Service, discovery::v1::EndpointSlice},
};

/// The kinds lb reads, as (apiVersion, kind).
const KNOWN: [(&str, &str); 2] = [
    (Service::API_VERSION, Service::KIND),
    (EndpointSlice::API_VERSION, EndpointSlice::KIND),
];

/// The known kind an object of (`api_version`, `kind`) was probably meant
/// to be: the same kind in another API version, another spelling of it
/// (case, plural, short name), or a typo of at most two letters.
pub(super) fn near_miss(api_version: &str, kind: &str) -> Option<(&'static str, &'static str)> {
    let lower = kind.to_ascii_lowercase();
    KNOWN.into_iter().find(|(known_version, known_kind)| {
        let known = known_kind.to_ascii_lowercase();
        let same_kind = lower == known
            || lower == format!("{known}s")
            || short_name(&known) == Some(lower.as_str());
        (same_kind && (kind != *known_kind || api_version != *known_version))
            || (!same_kind && edit_distance(&lower, &known) <= 2)
    })
}

/// kubectl's short names of the kinds lb reads.
fn short_name(kind_lower: &str) -> Option<&'static str> {
    match kind_lower {
        "service" => Some("svc"),
        _ => None,
    }
}

/// Levenshtein distance of two short ASCII words.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspellings_and_other_versions_of_a_known_kind_are_near_misses() {
        let service = Some(("v1", "Service"));
        let slice = Some(("discovery.k8s.io/v1", "EndpointSlice"));
        assert_eq!(near_miss("v1", "service"), service);
        assert_eq!(near_miss("v1", "Services"), service);
        assert_eq!(near_miss("v1", "svc"), service);
        assert_eq!(near_miss("v1", "Servcie"), service);
        assert_eq!(near_miss("v2", "Service"), service);
        assert_eq!(near_miss("core/v1", "Service"), service);
        assert_eq!(near_miss("discovery.k8s.io/v2", "EndpointSlice"), slice);
        assert_eq!(near_miss("v1", "EndpointSlice"), slice);
        assert_eq!(near_miss("discovery.k8s.io/v1", "Endpointslices"), slice);
        assert_eq!(near_miss("discovery.k8s.io/v1", "EndpointSlce"), slice);
    }

    #[test]
    fn other_kinds_and_the_known_ones_are_not() {
        for (version, kind) in [
            ("v1", "Service"),
            ("discovery.k8s.io/v1", "EndpointSlice"),
            ("apps/v1", "Deployment"),
            ("v1", "ConfigMap"),
            ("v1", "Secret"),
            ("v1", "Endpoints"),
            ("v1", "Namespace"),
            ("networking.k8s.io/v1", "Ingress"),
            ("v1", "ServiceAccount"),
            ("v1", "Pod"),
        ] {
            assert_eq!(near_miss(version, kind), None, "{version} {kind}");
        }
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("service", "service"), 0);
        assert_eq!(edit_distance("servcie", "service"), 2);
        assert_eq!(edit_distance("sevice", "service"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert!(edit_distance("secret", "service") > 2);
    }
}
