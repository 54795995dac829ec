//! `sessionAffinity` and its timeout, as kube-proxy reads them
//! (pkg/proxy/serviceport.go: `stickyMaxAgeSeconds` is
//! `sessionAffinityConfig.clientIP.timeoutSeconds` when the affinity is
//! ClientIP) with the API server's defaulting (10800 s) and validation
//! (`0 < timeoutSeconds <= 86400`), since manifests never passed through
//! one.

use k8s_openapi::api::core::v1::ServiceSpec;

use super::problems::Problems;
use crate::model::ProblemCode;

/// The API server's default `timeoutSeconds` (3 hours).
pub(super) const DEFAULT_TIMEOUT_S: u32 = 10_800;
/// The largest `timeoutSeconds` the API server accepts (one day).
pub(super) const MAX_TIMEOUT_S: u32 = 86_400;

/// The ClientIP affinity timeout in seconds; 0: no affinity. A broken
/// value is a problem, and the default stands in for it (affinity stays on:
/// the Service asked for it).
pub(super) fn client_ip_timeout(spec: &ServiceSpec, object: &str, problems: &mut Problems) -> u32 {
    let timeout = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds);
    match spec.session_affinity.as_deref() {
        None | Some("None") => {
            if timeout.is_some() {
                problems.warn(
                    object,
                    ProblemCode::IgnoredField,
                    "spec.sessionAffinityConfig is set but spec.sessionAffinity is not ClientIP; ignored",
                );
            }
            0
        }
        Some("ClientIP") => match timeout {
            None => DEFAULT_TIMEOUT_S,
            Some(seconds) if (1..=i64::from(MAX_TIMEOUT_S)).contains(&i64::from(seconds)) => {
                seconds as u32
            }
            Some(seconds) => {
                problems.warn(
                    object,
                    ProblemCode::InvalidValue,
                    format!(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds {seconds} is outside 1-{MAX_TIMEOUT_S}; using {DEFAULT_TIMEOUT_S}"
                    ),
                );
                DEFAULT_TIMEOUT_S
            }
        },
        Some(other) => {
            problems.warn(
                object,
                ProblemCode::InvalidValue,
                format!("spec.sessionAffinity \"{other}\" is not None or ClientIP; using None"),
            );
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::desired::test_support::*;

    fn timeouts(affinity: &str) -> (BTreeSet<u32>, Vec<Problem>) {
        let text = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: a}}\nspec: {{clusterIP: 10.96.0.9, {affinity} ports: [{{port: 80}}]}}\n"
        );
        let set = parse_documents("a.yaml", &text);
        let state = compute(&set.services, &set.slices, &node("node-a"));
        let found = state
            .frontends
            .values()
            .map(|s| s.affinity_timeout_s)
            .collect();
        (found, state.problems)
    }

    /// Upstream: serviceport.go sets `stickyMaxAgeSeconds` from
    /// `sessionAffinityConfig.clientIP.timeoutSeconds` for ClientIP; the
    /// API server defaults it to 10800 and accepts 1-86400.
    #[test]
    fn client_ip_affinity_timeout_is_kube_proxy_s_sticky_max_age() {
        assert_eq!(timeouts("").0, BTreeSet::from([0]));
        assert_eq!(timeouts("sessionAffinity: None,").0, BTreeSet::from([0]));
        assert_eq!(
            timeouts("sessionAffinity: ClientIP,").0,
            BTreeSet::from([10_800])
        );
        let given =
            "sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 7}},";
        assert_eq!(timeouts(given), (BTreeSet::from([7]), vec![]));
        let too_long = "sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 86401}},";
        let (found, problems) = timeouts(too_long);
        assert_eq!(found, BTreeSet::from([10_800]));
        assert_eq!(problems[0].code, ProblemCode::InvalidValue);
        let (found, problems) = timeouts("sessionAffinity: Cookie,");
        assert_eq!(found, BTreeSet::from([0]));
        assert_eq!(problems[0].code, ProblemCode::InvalidValue);
    }
}
