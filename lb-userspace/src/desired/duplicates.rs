//! Two Services with one namespace and name (possible only in manifest
//! mode: two files, or one document twice). One definition is used:
//! 1. the one serving now: more of its frontends are programmed for it
//!    ([`Holders`]) than for the other, so an edit or a stray copy never
//!    takes a working Service's addresses away;
//! 2. otherwise the older (`creationTimestamp`; one without sorts last);
//! 3. otherwise the first in source order (files by name, documents in
//!    order), which a restart keeps since the winner then serves.

use super::{holders::Holders, problems::Problems, services::ServiceView};
use crate::model::{NodeFacts, ProblemCode};

/// The views, sorted by namespace and name, with one per name; the others
/// get a problem saying which definition is used and why.
pub(super) fn one_per_name(
    views: Vec<ServiceView>,
    holders: &Holders,
    node: &NodeFacts,
    problems: &mut Problems,
) -> Vec<ServiceView> {
    let mut groups: Vec<Vec<ServiceView>> = Vec::new();
    for view in views {
        match groups.last_mut() {
            Some(group) if same_name(&group[0], &view) => group.push(view),
            _ => groups.push(vec![view]),
        }
    }
    groups
        .into_iter()
        .map(|group| keep_one(group, holders, node, problems))
        .collect()
}

fn same_name(a: &ServiceView, b: &ServiceView) -> bool {
    (&a.namespace, &a.name) == (&b.namespace, &b.name)
}

/// Ranks of a definition: frontends it serves now (more first), age
/// (older first), source order.
fn keep_one(
    group: Vec<ServiceView>,
    holders: &Holders,
    node: &NodeFacts,
    problems: &mut Problems,
) -> ServiceView {
    let mut ranked: Vec<(usize, ServiceView)> = group
        .into_iter()
        .map(|view| (serving(&view, holders, node), view))
        .collect();
    // Stable: among equals, source order stays.
    ranked.sort_by(|(a_serving, a), (b_serving, b)| {
        b_serving.cmp(a_serving).then_with(|| age(a).cmp(&age(b)))
    });
    let mut ranked = ranked.into_iter();
    let (kept_serving, kept) = ranked.next().expect("a group is never empty");
    for (serving, other) in ranked {
        let why = if kept_serving > serving {
            format!(
                "the definition serving now ({}) is used, this one ({}) is not",
                describe(&kept),
                describe(&other)
            )
        } else if age(&kept) < age(&other) {
            format!(
                "the older definition ({}) is used, this one ({}) is not",
                describe(&kept),
                describe(&other)
            )
        } else {
            "the first definition is used".to_owned()
        };
        problems.push(
            &other.object,
            ProblemCode::DuplicateObject,
            format!("defined more than once; {why}"),
        );
    }
    kept
}

/// How many of the frontends this definition claims are programmed for it.
fn serving(view: &ServiceView, holders: &Holders, node: &NodeFacts) -> usize {
    if holders.is_empty() {
        return 0;
    }
    view.ports
        .iter()
        .flat_map(|port| view.frontends(port, &[], node).0)
        .filter(|claim| holders.holds(&claim.frontend, &claim.spec.service))
        .count()
}

fn age(view: &ServiceView) -> (bool, Option<k8s_openapi::jiff::Timestamp>) {
    (view.created.is_none(), view.created)
}

/// What tells two definitions apart in a problem: addresses and ports.
fn describe(view: &ServiceView) -> String {
    let ips: Vec<String> = view.cluster_ips.iter().map(ToString::to_string).collect();
    let ports: Vec<String> = view
        .ports
        .iter()
        .map(|p| format!("{}/{}", p.port, p.name.protocol))
        .collect();
    format!(
        "clusterIP {}, ports {}",
        if ips.is_empty() {
            "none".to_owned()
        } else {
            ips.join(",")
        },
        if ports.is_empty() {
            "none".to_owned()
        } else {
            ports.join(",")
        }
    )
}

#[cfg(test)]
mod tests {
    use crate::desired::test_support::*;

    fn good(cluster_ip: &str, created: &str) -> String {
        format!(
            "apiVersion: v1
kind: Service
metadata: {{name: good{created}}}
spec:
  clusterIP: {cluster_ip}
  ports: [{{name: http, port: 80}}]
"
        )
    }

    fn kept(docs: &[&str], holders: &Holders) -> (Vec<String>, Vec<Problem>) {
        let set = parse_documents("dup.yaml", &docs.join("---\n"));
        assert_eq!(set.problems, vec![]);
        let state = crate::desired::compute(
            &set.services,
            &set.slices,
            &node("node-a"),
            &Rules::default(),
            holders,
        );
        (owners(&state), state.problems)
    }

    /// lb's rule (the API server stores one object per name; manifests may
    /// hold two): the definition serving now is kept, even when the other
    /// comes first in source order or is older.
    #[test]
    fn the_definition_serving_now_is_kept() {
        let serving = good("10.96.0.10", "");
        let holders = holders_of(&compute(
            &parse_documents("a.yaml", &serving).services,
            &[],
            &node("node-a"),
        ));
        for stray in [
            good("10.96.0.99", ""),
            good("10.96.0.99", ", creationTimestamp: '2000-01-01T00:00:00Z'"),
        ] {
            let (owners, problems) = kept(&[&stray, &serving], &holders);
            assert_eq!(owners, vec!["10.96.0.10:80/TCP Internal default/good:http"]);
            assert_eq!(
                problems,
                vec![error(
                    ProblemCode::DuplicateObject,
                    "Service default/good",
                    "defined more than once; the definition serving now (clusterIP 10.96.0.10, ports 80/TCP) is used, this one (clusterIP 10.96.0.99, ports 80/TCP) is not"
                )]
            );
        }
    }

    /// Neither serving: the older, then the first in source order.
    #[test]
    fn otherwise_the_older_then_the_first_definition_is_kept() {
        let none = Holders::default();
        let first = good("10.96.0.10", "");
        let older = good("10.96.0.99", ", creationTimestamp: '2000-01-01T00:00:00Z'");
        let (owners, problems) = kept(&[&first, &older], &none);
        assert_eq!(owners, vec!["10.96.0.99:80/TCP Internal default/good:http"]);
        assert!(problems[0].reason.contains("the older definition"));
        let second = good("10.96.0.99", "");
        let (owners, problems) = kept(&[&first, &second], &none);
        assert_eq!(owners, vec!["10.96.0.10:80/TCP Internal default/good:http"]);
        assert_eq!(
            problems[0].reason,
            "defined more than once; the first definition is used"
        );
    }
}
