//! The endpoint set a frontend uses, in the words `lb service list` and
//! `lb trace` show: what [`categorize_endpoints`] chose for policy Cluster
//! or Local, with what happens when it is empty.
//!
//! [`categorize_endpoints`]: super::endpoints::categorize_endpoints

use super::{
    endpoints::{Categorized, Usable},
    slices::Candidate,
};
use crate::model::{Endpoint, NodeFacts, WhenEmpty};

/// The endpoint set a frontend uses, and why.
#[derive(Clone, Debug)]
pub(super) struct Choice {
    pub(super) endpoints: Vec<Endpoint>,
    pub(super) when_empty: WhenEmpty,
    pub(super) selection: String,
}

impl Choice {
    fn new(usable: &Usable, when_empty: WhenEmpty, selection: String) -> Choice {
        let mut endpoints: Vec<Endpoint> = usable
            .endpoints
            .iter()
            .map(|c| c.endpoint(usable.serving_terminating))
            .collect();
        endpoints.sort();
        endpoints.dedup_by_key(|e| e.backend);
        Choice {
            endpoints,
            when_empty,
            selection,
        }
    }

    fn no_endpoints() -> Choice {
        Choice::new(
            &Usable::default(),
            WhenEmpty::Reject,
            "no endpoints".to_owned(),
        )
    }

    pub(super) fn with_note(&self, note: &str) -> Choice {
        Choice {
            selection: format!("{} ({note})", self.selection),
            ..self.clone()
        }
    }
}

/// Policy Cluster: ready endpoints anywhere in the cluster (narrowed by
/// topology hints), else the serving and terminating ones, else nothing
/// (reject).
pub(super) fn cluster_choice(
    usable: &Usable,
    categorized: &Categorized,
    candidates: &[Candidate],
) -> Choice {
    let picked = usable.endpoints.len();
    if picked == 0 {
        return Choice::no_endpoints();
    }
    let selection = if usable.serving_terminating {
        format!("cluster: no ready endpoint, {picked} serving+terminating")
    } else if let Some(hint) = categorized.topology {
        let ready = candidates.iter().filter(|c| c.ready).count();
        format!(
            "cluster: {picked} ready {} by topology hints (of {ready} ready)",
            hint.describe()
        )
    } else {
        format!("cluster: {picked} ready")
    };
    Choice::new(usable, WhenEmpty::Reject, selection)
}

/// Policy Local (`policy` names which field asked for it): this node's
/// ready endpoints, else its serving and terminating ones. With none,
/// traffic is dropped when the Service has endpoints elsewhere and rejected
/// when it has none at all.
pub(super) fn local_choice(
    policy: &str,
    usable: &Usable,
    categorized: &Categorized,
    candidates: &[Candidate],
    node: &NodeFacts,
) -> Choice {
    let node_name = if node.name.is_empty() {
        "this node"
    } else {
        node.name.as_str()
    };
    let total = usable_anywhere(candidates);
    let picked = usable.endpoints.len();
    if picked > 0 {
        let selection = if usable.serving_terminating {
            format!(
                "{policy}=Local: no ready endpoint on {node_name}, {picked} serving+terminating (of {total})"
            )
        } else {
            format!("{policy}=Local: {picked} ready on {node_name} (of {total})")
        };
        return Choice::new(usable, WhenEmpty::Drop, selection);
    }
    if !categorized.has_any {
        return Choice::no_endpoints();
    }
    let selection = format!("{policy}=Local: no endpoint on {node_name} (of {total}), dropping");
    Choice::new(usable, WhenEmpty::Drop, selection)
}

/// How many endpoints policy Cluster could use, ignoring topology: the
/// ready ones, or the serving and terminating ones when none is ready.
fn usable_anywhere(candidates: &[Candidate]) -> usize {
    match candidates.iter().filter(|c| c.ready).count() {
        0 => candidates
            .iter()
            .filter(|c| c.serving_terminating())
            .count(),
        ready => ready,
    }
}

#[cfg(test)]
mod tests {
    use crate::desired::test_support::*;

    #[test]
    fn internal_policy_local() {
        let svc = spn("itp", "agent", "", Udp);
        let state = desired("itp-local.yaml", &node("node-a"));
        let expected = BTreeMap::from([(
            fe("10.96.0.80", 8125, Udp, Internal),
            spec(
                &svc,
                ClusterIp,
                &[ep("10.244.1.80:8125", Udp, true, Some("agent-node-a"))],
                Drop,
                "internalTrafficPolicy=Local: 1 ready on node-a (of 2)",
            ),
        )]);
        assert_eq!(state.frontends, expected);

        let state = desired("itp-local.yaml", &node("node-c"));
        let expected = BTreeMap::from([(
            fe("10.96.0.80", 8125, Udp, Internal),
            spec(
                &svc,
                ClusterIp,
                &[],
                Drop,
                "internalTrafficPolicy=Local: no endpoint on node-c (of 2), dropping",
            ),
        )]);
        assert_eq!(state.frontends, expected);
    }

    #[test]
    fn local_policy_without_any_endpoint_rejects() {
        let mut set = fixture("itp-local.yaml");
        set.slices.clear();
        let state = compute(&set.services, &set.slices, &node("node-a"));
        let only = state.frontends.values().next().expect("one frontend");
        assert_eq!(only.when_empty, Reject);
        assert_eq!(only.selection, "no endpoints");
    }

    #[test]
    fn local_policy_falls_back_to_local_serving_terminating() {
        let mut set = fixture("itp-local.yaml");
        let endpoints = &mut std::sync::Arc::make_mut(&mut set.slices[0]).endpoints;
        assert!(!endpoints.is_empty());
        for endpoint in endpoints.iter_mut() {
            (endpoint.ready, endpoint.serving, endpoint.terminating) =
                (Some(false), Some(true), Some(true));
        }
        let state = compute(&set.services, &set.slices, &node("node-a"));
        let only = state.frontends.values().next().expect("one frontend");
        assert_eq!(
            only.endpoints,
            vec![terminating(ep(
                "10.244.1.80:8125",
                Udp,
                true,
                Some("agent-node-a")
            ))]
        );
        assert_eq!(only.when_empty, Drop);
        assert_eq!(
            only.selection,
            "internalTrafficPolicy=Local: no ready endpoint on node-a, 1 serving+terminating (of 2)"
        );
    }
}
