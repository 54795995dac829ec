//! Endpoint choice for one Service port: kube-proxy's `CategorizeEndpoints`
//! (kubernetes/kubernetes, pkg/proxy/topology.go), kept in its shape and
//! under its names so that a diff against upstream stays mechanical:
//! `clusterEndpoints` is [`Categorized::cluster`], `localEndpoints`
//! [`Categorized::local`], `allReachableEndpoints`
//! [`Categorized::all_reachable`], `hasAnyEndpoints` [`Categorized::has_any`];
//! `topologyModeFromHints` and `availableForTopology` keep their names.
//!
//! Where lb differs from current upstream, on purpose (the behaviour lb has
//! always had):
//! - Hints count only when the Service asks for them ([`TopologyWish`]: the
//!   topology annotations set to `auto`, or `trafficDistribution`), as
//!   kube-proxy did while it checked the hints annotation; current upstream
//!   trusts whatever hints the EndpointSlice controller wrote.
//! - Same-node hints (upstream: the PreferSameTrafficDistribution gate) only
//!   for `trafficDistribution: PreferSameNode`.
//! - The topology mode is worked out even when the port uses no Cluster
//!   endpoints, because the service map records it
//!   (`ServicePortInfo::topology_aware`) for every port.
//! - No early return for a port without endpoints: the kinds of endpoints
//!   the port uses come back empty, not absent, because its frontends exist
//!   all the same (and reject).

use super::slices::Candidate;
use crate::model::NodeFacts;

/// Which topology hints a Service asked for.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct TopologyWish {
    pub(super) zone: bool,
    pub(super) node: bool,
}

/// The topology mode in force for one Service port (upstream's
/// `topologyMode` other than ""): keep the endpoints hinted for this zone,
/// or for this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Hint<'a> {
    /// `PreferSameZone`.
    Zone(&'a str),
    /// `PreferSameNode`.
    Node(&'a str),
}

impl Hint<'_> {
    /// For the endpoint set's explanation ("in zone zone-a").
    pub(super) fn describe(&self) -> String {
        match self {
            Hint::Zone(zone) => format!("in zone {zone}"),
            Hint::Node(node) => format!("for node {node}"),
        }
    }
}

/// What a Service port's traffic policies need (upstream's `ServicePort`
/// methods of the same names).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PortPolicy {
    pub(super) internal_local: bool,
    pub(super) external_local: bool,
    /// The port has a NodePort, a LoadBalancer IP or an externalIP.
    pub(super) externally_accessible: bool,
}

impl PortPolicy {
    /// Upstream `UsesClusterEndpoints`: internal policy Cluster, or external
    /// traffic at all (even under externalTrafficPolicy=Local, pods and the
    /// node reach every endpoint through the external addresses).
    fn uses_cluster_endpoints(self) -> bool {
        !self.internal_local || self.externally_accessible
    }

    /// Upstream `UsesLocalEndpoints`.
    fn uses_local_endpoints(self) -> bool {
        self.internal_local || (self.external_local && self.externally_accessible)
    }
}

/// The usable endpoints of one kind (Cluster or Local): the ready ones, or
/// else the serving and terminating ones.
#[derive(Clone, Debug, Default)]
pub(super) struct Usable<'a> {
    pub(super) endpoints: Vec<&'a Candidate>,
    /// No endpoint was ready: these are serving and terminating.
    pub(super) serving_terminating: bool,
}

/// What [`categorize_endpoints`] returns for one Service port.
#[derive(Clone, Debug, Default)]
pub(super) struct Categorized<'a> {
    /// Policy Cluster's endpoints, narrowed by topology; `None` when the
    /// port never uses policy Cluster. Every ready endpoint of the cluster
    /// is a candidate, on this node or not: the external scope under
    /// externalTrafficPolicy=Cluster sends to remote endpoints too.
    pub(super) cluster: Option<Usable<'a>>,
    /// Policy Local's endpoints (this node's only, topology ignored);
    /// `None` when the port never uses policy Local.
    pub(super) local: Option<Usable<'a>>,
    /// Some endpoint anywhere in the cluster is usable, even when none is
    /// reachable from this node: an empty Local set then drops, while a
    /// Service without any endpoint rejects.
    pub(super) has_any: bool,
    /// The topology hints in force, if any.
    pub(super) topology: Option<Hint<'a>>,
}

/// Upstream's rule: "usable" means ready, falling back to serving and
/// terminating (independently for Cluster and Local) when none is ready.
/// Topology hints narrow the Cluster endpoints all-or-nothing (see
/// [`topology_mode_from_hints`]) and never the Local ones.
pub(super) fn categorize_endpoints<'a>(
    endpoints: &'a [Candidate],
    policy: PortPolicy,
    wish: TopologyWish,
    node: &'a NodeFacts,
) -> Categorized<'a> {
    let zone = node.zone.as_deref().unwrap_or_default();
    let topology = topology_mode_from_hints(wish, endpoints, &node.name, zone);
    let mut has_any = false;
    let mut cluster = None;
    if policy.uses_cluster_endpoints() {
        let mut usable = Usable {
            endpoints: filter_endpoints(endpoints, |ep| {
                ep.ready && available_for_topology(ep, topology)
            }),
            serving_terminating: false,
        };
        // Upstream: "If we didn't get any endpoints, try again using
        // terminating endpoints. (Note that we would already have chosen to
        // ignore topology if there were no ready endpoints for the given
        // topology, so the problem at this point must be that there are no
        // ready endpoints anywhere.)"
        if usable.endpoints.is_empty() {
            usable = Usable {
                endpoints: filter_endpoints(endpoints, Candidate::serving_terminating),
                serving_terminating: true,
            };
        }
        // If any endpoint is usable anywhere, one is in the Cluster set.
        has_any = !usable.endpoints.is_empty();
        cluster = Some(usable);
    }
    if !policy.uses_local_endpoints() {
        return Categorized {
            cluster,
            local: None,
            has_any,
            topology,
        };
    }

    // Pre-scan: which kind of endpoint policy Local uses, and whether any
    // endpoint is usable anywhere in the cluster.
    let mut has_local_ready = false;
    let mut has_local_serving_terminating = false;
    for ep in endpoints {
        if ep.ready {
            has_any = true;
            has_local_ready |= ep.local;
        } else if ep.serving_terminating() {
            has_any = true;
            has_local_serving_terminating |= ep.local;
        }
    }
    let local = if has_local_ready {
        Usable {
            endpoints: filter_endpoints(endpoints, |ep| ep.local && ep.ready),
            serving_terminating: false,
        }
    } else if has_local_serving_terminating {
        Usable {
            endpoints: filter_endpoints(endpoints, |ep| ep.local && ep.serving_terminating()),
            serving_terminating: true,
        }
    } else {
        Usable::default()
    };
    Categorized {
        cluster,
        local: Some(local),
        has_any,
        topology,
    }
}

impl Categorized<'_> {
    /// Upstream `allReachableEndpoints`: every endpoint this node may send
    /// to, the union of the Cluster and Local sets (upstream skips the merge
    /// when one set holds the other; the union is the same). lb has no use
    /// for it outside the tests that mirror upstream's: the plan takes the
    /// backends from each frontend's endpoint set, which is one of these two.
    #[cfg(test)]
    pub(super) fn all_reachable(&self) -> Vec<&Candidate> {
        let mut all: Vec<&Candidate> = self
            .cluster
            .iter()
            .chain(self.local.iter())
            .flat_map(|usable| usable.endpoints.iter().copied())
            .collect();
        all.sort_by_key(|ep| ep.backend);
        all.dedup_by_key(|ep| ep.backend);
        all
    }
}

/// Upstream `topologyModeFromHints`: the hints apply only when every ready
/// endpoint carries one and at least one names this node (same-node hints)
/// or this node's zone (same-zone hints, tried second). A half-hinted slice
/// is mid-update, and trusting it could starve a zone. No node name or no
/// zone label means no such hint applies.
fn topology_mode_from_hints<'a>(
    wish: TopologyWish,
    endpoints: &[Candidate],
    node_name: &'a str,
    zone: &'a str,
) -> Option<Hint<'a>> {
    let names = |hints: &[String], name: &str| !name.is_empty() && hints.iter().any(|h| h == name);
    let mut has_ready_endpoints = false;
    let mut has_endpoint_for_node = false;
    let mut all_endpoints_have_node_hints = true;
    let mut has_endpoint_for_zone = false;
    let mut all_endpoints_have_zone_hints = true;
    for endpoint in endpoints.iter().filter(|ep| ep.ready) {
        has_ready_endpoints = true;
        if endpoint.node_hints.is_empty() {
            all_endpoints_have_node_hints = false;
        } else if names(&endpoint.node_hints, node_name) {
            has_endpoint_for_node = true;
        }
        if endpoint.zone_hints.is_empty() {
            all_endpoints_have_zone_hints = false;
        } else if names(&endpoint.zone_hints, zone) {
            has_endpoint_for_zone = true;
        }
    }
    if !has_ready_endpoints {
        return None;
    }
    if wish.node && all_endpoints_have_node_hints && has_endpoint_for_node {
        return Some(Hint::Node(node_name));
    }
    if wish.zone && all_endpoints_have_zone_hints && has_endpoint_for_zone {
        return Some(Hint::Zone(zone));
    }
    None
}

/// Upstream `availableForTopology`: no fallback here; it happened when the
/// mode was chosen.
fn available_for_topology(endpoint: &Candidate, topology: Option<Hint>) -> bool {
    match topology {
        None => true,
        Some(Hint::Node(node)) => endpoint.node_hints.iter().any(|h| h == node),
        Some(Hint::Zone(zone)) => endpoint.zone_hints.iter().any(|h| h == zone),
    }
}

fn filter_endpoints(
    endpoints: &[Candidate],
    predicate: impl Fn(&Candidate) -> bool,
) -> Vec<&Candidate> {
    endpoints.iter().filter(|ep| predicate(ep)).collect()
}

#[cfg(test)]
mod tests;
