//! Conflicts: two Service ports claiming one frontend. A newcomer never
//! takes over: the Service port the frontend is programmed for now keeps it
//! ([`Holders`]); if none is, the older Service (`creationTimestamp`; one
//! without sorts last), then the Service port whose name sorts first.

use std::{cmp::Ordering, collections::BTreeMap};

use super::{frontends::Claim, holders::Holders, problems::Problems};
use crate::model::{Frontend, FrontendSpec, ProblemCode};

/// One owner per frontend; the others get a problem naming the owner and
/// why it keeps the frontend. The same Service port claiming one frontend
/// twice (a clusterIP also listed as an externalIP) is no conflict; the
/// first kind (ClusterIP, NodePort, LoadBalancer, externalIP) wins.
pub(super) fn resolve_conflicts(
    claims: Vec<Claim>,
    holders: &Holders,
    problems: &mut Problems,
) -> BTreeMap<Frontend, FrontendSpec> {
    let mut ranked: Vec<(bool, Claim)> = claims
        .into_iter()
        .map(|claim| (holders.holds(&claim.frontend, &claim.spec.service), claim))
        .collect();
    ranked.sort_by(|(a_held, a), (b_held, b)| {
        a.frontend
            .cmp(&b.frontend)
            .then_with(|| precedence((*a_held, a), (*b_held, b)))
    });
    let mut kept: BTreeMap<Frontend, (bool, Claim)> = BTreeMap::new();
    for (held, claim) in ranked {
        match kept.get(&claim.frontend) {
            None => {
                kept.insert(claim.frontend, (held, claim));
            }
            Some((_, owner)) if owner.spec.service == claim.spec.service => {
                tracing::debug!(frontend = %claim.frontend, service = %owner.spec.service, "frontend claimed twice by one service port");
            }
            Some((owner_held, owner)) => problems.push(
                &claim.object,
                ProblemCode::Conflict,
                format!(
                    "frontend {} already used by {}, which {}; this Service port is not served there: give it another address or port",
                    claim.frontend,
                    owner.spec.service,
                    why_kept(*owner_held, owner, &claim),
                ),
            ),
        }
    }
    kept.into_iter()
        .map(|(frontend, (_, claim))| (frontend, claim.spec))
        .collect()
}

/// Who keeps a frontend: the holder, the older, the name that sorts first,
/// the kind that sorts first.
fn precedence((a_held, a): (bool, &Claim), (b_held, b): (bool, &Claim)) -> Ordering {
    b_held
        .cmp(&a_held)
        .then_with(|| age(a).cmp(&age(b)))
        .then_with(|| a.spec.service.cmp(&b.spec.service))
        .then_with(|| a.spec.kind.cmp(&b.spec.kind))
}

/// Older first; a Service without a creation time (a hand-written
/// manifest) after every one with.
fn age(claim: &Claim) -> (bool, Option<k8s_openapi::jiff::Timestamp>) {
    (claim.created.is_none(), claim.created)
}

fn why_kept(owner_held: bool, owner: &Claim, newcomer: &Claim) -> &'static str {
    if owner_held {
        "is serving it"
    } else if age(owner) < age(newcomer) {
        "was created first"
    } else {
        "sorts first by name (neither serves it yet, neither is older)"
    }
}

#[cfg(test)]
mod tests {
    use crate::desired::test_support::*;

    #[test]
    fn frontend_conflict_keeps_first_service_port() {
        let state = desired("conflict.yaml", &node("node-a"));
        assert_eq!(
            state.problems,
            vec![error(
                ProblemCode::Conflict,
                "Service conflict/b",
                "frontend 192.0.2.10:80/TCP already used by conflict/a:http, which sorts first by name (neither serves it yet, neither is older); this Service port is not served there: give it another address or port"
            )]
        );
        let owners: Vec<(String, Scope, String)> = state
            .frontends
            .iter()
            .map(|(f, s)| (f.to_string(), f.scope, s.service.to_string()))
            .collect();
        let row = |f: &str, scope, svc: &str| (f.to_owned(), scope, svc.to_owned());
        assert_eq!(
            owners,
            vec![
                row("10.96.0.120:80/TCP", Internal, "conflict/a:http"),
                row("10.96.0.121:80/TCP", Internal, "conflict/b:web"),
                row("192.0.2.10:80/TCP", External, "conflict/a:http"),
                row("192.0.2.10:80/TCP", Internal, "conflict/a:http"),
            ]
        );
    }

    #[test]
    fn same_service_port_twice_on_one_frontend_is_no_conflict() {
        let text = "apiVersion: v1
kind: Service
metadata: {name: twice}
spec:
  clusterIP: 10.96.0.130
  externalIPs: [10.96.0.130]
  ports: [{port: 80}]
";
        let set = parse_documents("twice.yaml", text);
        let state = compute(&set.services, &set.slices, &node("node-a"));
        assert_eq!(state.problems, vec![]);
        let kinds: Vec<(Scope, FrontendKind)> = state
            .frontends
            .iter()
            .map(|(f, s)| (f.scope, s.kind))
            .collect();
        assert_eq!(kinds, vec![(External, ExternalIp), (Internal, ClusterIp)]);
    }

    const GOOD: &str = "apiVersion: v1
kind: Service
metadata: {name: good, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, nodePort: 30080}]
";

    fn newcomer(name: &str, created: Option<&str>) -> String {
        let created = created.map_or(String::new(), |t| format!(", creationTimestamp: '{t}'"));
        format!(
            "apiVersion: v1
kind: Service
metadata: {{name: {name}{created}}}
spec:
  type: NodePort
  clusterIP: 10.96.0.11
  ports: [{{name: web, port: 81, nodePort: 30080}}]
"
        )
    }

    fn node_port_owner(yaml: &[&str], holders: &Holders) -> (String, Vec<Problem>) {
        let text = yaml.join("---\n");
        let set = parse_documents("both.yaml", &text);
        assert_eq!(set.problems, vec![]);
        let state = crate::desired::compute(
            &set.services,
            &set.slices,
            &node("node-a"),
            &Rules::default(),
            holders,
        );
        let owner = state.frontends[&fe("192.168.1.10", 30080, Tcp, External)]
            .service
            .to_string();
        (owner, state.problems)
    }

    /// lb's rule (no upstream counterpart: the API server's allocator never
    /// hands out one NodePort twice, manifests can): the Service port
    /// serving a frontend keeps it, whatever the newcomer's name or age.
    #[test]
    fn the_service_serving_a_frontend_keeps_it_against_any_newcomer() {
        let alone = node_port_owner(&[GOOD], &Holders::default());
        assert_eq!(alone.0, "default/good:http");
        let set = parse_documents("good.yaml", GOOD);
        let holders = holders_of(&compute(&set.services, &set.slices, &node("node-a")));
        for steal in [
            newcomer("aaa-steal", None),
            newcomer("aaa-steal", Some("2000-01-01T00:00:00Z")),
        ] {
            let (owner, problems) = node_port_owner(&[&steal, GOOD], &holders);
            assert_eq!(owner, "default/good:http", "{steal}");
            assert_eq!(problems.len(), 1);
            assert_eq!(problems[0].object, "Service default/aaa-steal");
            assert_eq!(problems[0].code, ProblemCode::Conflict);
            assert!(
                problems[0]
                    .reason
                    .contains("already used by default/good:http, which is serving it"),
                "{}",
                problems[0].reason
            );
        }
    }

    /// With nothing programmed (a fresh node): the older Service, then one
    /// with a creation time before one without, then the name.
    #[test]
    fn without_holders_the_older_service_then_the_name_keeps_a_frontend() {
        let none = Holders::default();
        let older = newcomer("aaa", Some("2000-01-01T00:00:00Z"));
        assert_eq!(node_port_owner(&[GOOD, &older], &none).0, "default/aaa:web");
        let newer = newcomer("aaa", Some("2025-01-01T00:00:00Z"));
        let (owner, problems) = node_port_owner(&[GOOD, &newer], &none);
        assert_eq!(owner, "default/good:http");
        assert!(problems[0].reason.contains("which was created first"));
        let undated = newcomer("aaa", None);
        assert_eq!(
            node_port_owner(&[GOOD, &undated], &none).0,
            "default/good:http"
        );
        let good_undated = GOOD.replace(", creationTimestamp: '2024-01-01T00:00:00Z'", "");
        let (owner, problems) = node_port_owner(&[&good_undated, &undated], &none);
        assert_eq!(owner, "default/aaa:web");
        assert!(problems[0].reason.contains("sorts first by name"));
    }
}
