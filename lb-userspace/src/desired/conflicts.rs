//! Conflicts: two Service ports claiming one frontend.

use std::collections::BTreeMap;

use super::{frontends::Claim, problems::Problems};
use crate::model::{Frontend, FrontendSpec, ProblemCode};

/// One owner per frontend: the Service port whose name sorts first keeps it,
/// the others get a problem. The same Service port claiming one frontend
/// twice (a clusterIP also listed as an externalIP) is no conflict; the
/// first kind (ClusterIP, NodePort, LoadBalancer, externalIP) wins.
pub(super) fn resolve_conflicts(
    mut claims: Vec<Claim>,
    problems: &mut Problems,
) -> BTreeMap<Frontend, FrontendSpec> {
    claims.sort_by(|a, b| {
        (a.frontend, &a.spec.service, a.spec.kind).cmp(&(b.frontend, &b.spec.service, b.spec.kind))
    });
    let mut frontends: BTreeMap<Frontend, FrontendSpec> = BTreeMap::new();
    for claim in claims {
        match frontends.get(&claim.frontend) {
            None => {
                frontends.insert(claim.frontend, claim.spec);
            }
            Some(kept) if kept.service == claim.spec.service => {
                tracing::debug!(frontend = %claim.frontend, service = %kept.service, "frontend claimed twice by one service port");
            }
            Some(kept) => problems.push(
                &claim.object,
                ProblemCode::Conflict,
                format!(
                    "frontend {} already used by {}",
                    claim.frontend, kept.service
                ),
            ),
        }
    }
    frontends
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
                "frontend 192.0.2.10:80/TCP already used by conflict/a:http"
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
}
