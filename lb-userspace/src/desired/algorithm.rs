//! `lb.kubernetes.io/algorithm` (beyond kube-proxy): the balancing
//! algorithm a Service's new flows use. Absent: Maglev. A value lb does not
//! know is a problem (`unknown-algorithm`) and Maglev stands in for it: the
//! Service is served, only not the way its annotation asks.

use k8s_openapi::api::core::v1::Service;

use super::{labels::ANNOTATION_ALGORITHM, problems::Problems};
use crate::model::{Algorithm, ProblemCode};

/// The Service's algorithm, from its annotation.
pub(super) fn algorithm(svc: &Service, object: &str, problems: &mut Problems) -> Algorithm {
    let annotations = svc.metadata.annotations.as_ref();
    let Some(value) = annotations.and_then(|a| a.get(ANNOTATION_ALGORITHM)) else {
        return Algorithm::default();
    };
    // Annotation values are free text: tolerate what a YAML edit leaves
    // around the word, never its case (the API's enums are case-sensitive).
    Algorithm::from_annotation(value.trim()).unwrap_or_else(|| {
        let known: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
        problems.warn(
            object,
            ProblemCode::UnknownAlgorithm,
            format!(
                "annotation {ANNOTATION_ALGORITHM} \"{value}\" is not one of {}; using {}",
                known.join(", "),
                Algorithm::default()
            ),
        );
        Algorithm::default()
    })
}

#[cfg(test)]
mod tests {
    use crate::desired::test_support::*;
    use crate::model::{Algorithm, Severity};

    fn algorithms(annotation: &str) -> (BTreeSet<Algorithm>, Vec<Problem>) {
        let text = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: a{annotation}}}\nspec: {{clusterIP: 10.96.0.9, type: NodePort, ports: [{{port: 80, nodePort: 30080}}]}}\n"
        );
        let set = parse_documents("a.yaml", &text);
        let state = compute(&set.services, &set.slices, &node("node-a"));
        let found = state.frontends.values().map(|s| s.algorithm).collect();
        (found, state.problems)
    }

    fn annotated(value: &str) -> String {
        format!(", annotations: {{lb.kubernetes.io/algorithm: {value:?}}}")
    }

    #[test]
    fn every_frontend_of_the_service_carries_its_algorithm() {
        assert_eq!(
            algorithms(""),
            (BTreeSet::from([Algorithm::Maglev]), vec![])
        );
        for (value, algorithm) in [
            ("maglev", Algorithm::Maglev),
            ("random", Algorithm::Random),
            ("least-connections", Algorithm::LeastConnections),
            (" random\n", Algorithm::Random),
        ] {
            assert_eq!(
                algorithms(&annotated(value)),
                (BTreeSet::from([algorithm]), vec![]),
                "{value:?}"
            );
        }
    }

    #[test]
    fn an_unknown_algorithm_is_a_problem_and_maglev_stands_in() {
        for value in ["round-robin", "Random", "least_connections", ""] {
            let (found, problems) = algorithms(&annotated(value));
            assert_eq!(found, BTreeSet::from([Algorithm::Maglev]), "{value:?}");
            assert_eq!(problems.len(), 1, "{value:?}: {problems:?}");
            assert_eq!(problems[0].code, ProblemCode::UnknownAlgorithm);
            assert_eq!(problems[0].severity, Severity::Warning);
            assert!(
                problems[0]
                    .reason
                    .contains("maglev, random, least-connections; using maglev"),
                "{}",
                problems[0].reason
            );
        }
    }
}
