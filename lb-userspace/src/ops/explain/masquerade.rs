//! The masquerade part of a trace report: kube-proxy's decision for the
//! traced connection (`lb_common::snat`), as the agent encoded it in the
//! frontend (`FE_FLAG_MASQUERADE`), and what the datapath did with it: the
//! node's address (`TRACE_MASQUERADE`), the source port the new flow would
//! claim (`TRACE_SNAT_APPLIED`), or why the source is kept (a backend on
//! this node, `TRACE_SNAT_LOCAL_BACKEND`; every port tried taken,
//! `TRACE_SNAT_EXHAUSTED`).

use std::net::Ipv4Addr;

use lb_common::{
    FE_KIND_CLUSTER_IP, FE_KIND_EXTERNAL_IP, FE_KIND_LOAD_BALANCER, FE_KIND_NODE_PORT,
    TRACE_CONNECTION, TraceRecord,
    masquerade_rules::{ClusterIpRule, TRACE_MASQ_HAIRPIN, TRACE_MASQ_POD_SHORT_CIRCUIT},
    snat::{
        Masquerade, SNAT_PORT_MAX, SNAT_PORT_MIN, TRACE_MASQUERADE, TRACE_SNAT_APPLIED,
        TRACE_SNAT_EXHAUSTED, TRACE_SNAT_LOCAL_BACKEND, masquerades,
    },
};
use serde::Serialize;

use super::Entry;

/// What happens to the traced connection's source.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct MasqueradeView {
    /// The rule that decided, in words.
    pub rule: &'static str,
    /// The address kube-proxy would masquerade to (the node's primary IPv4).
    pub address: Option<String>,
    /// The source ports a masqueraded connection's port comes from.
    pub ports: Option<String>,
    /// The source port this new connection would get (the first free one
    /// the datapath tried).
    pub port: Option<u16>,
    /// Whether this datapath rewrites the source.
    pub applied: bool,
    /// Why it does not, where kube-proxy would.
    pub not_applied_because: Option<&'static str>,
    /// On the socket path: the rule by which kube-proxy would masquerade
    /// this connection (`None`: it would not).
    pub kube_proxy_masquerades: Option<&'static str>,
}

/// Why a masqueraded decision keeps the source.
const LOCAL_BACKEND: &str = "the backend is on this node, and no hook translates its pod's replies back yet: the client's address is kept (README, \"Not built yet\")";
const EXHAUSTED: &str = "every source port tried toward this backend is taken: the new connection is dropped (drop_snat_port_exhausted)";
const ESTABLISHED_UNMASQUERADED: &str = "this established connection was not masqueraded at its first packet (a local backend then, or no node address): the connection table keeps it so";
const ESTABLISHED_MASQUERADED: &str =
    "an established connection, masqueraded at its first packet: the connection table keeps it so";
const HAIRPIN: &str = "hairpin (the source is the endpoint chosen: traffic that loops back to the originator): masquerade";
const POD_SHORT_CIRCUIT: &str = "external frontend, policy Local, source inside --cluster-cidr (pod traffic, short-circuited to every endpoint): source kept";
const NODE_SOCKET: &str = "a process of this node: connect() is translated, and the kernel picks the source by its route to the backend, the address masquerade would pick";
const POD_SOCKET: &str = "a pod of this node: connect() is translated and its source cannot be rewritten, so the backend sees the pod's address where kube-proxy shows the node's (README, \"Not built yet\")";

/// kube-proxy's rule for a connection the XDP path translated, and
/// whether it masquerades.
fn outside_rule(record: &TraceRecord) -> (&'static str, bool) {
    let fe = &record.frontend;
    let steps = record.steps;
    let (rule, masquerading) = if steps & TRACE_MASQ_POD_SHORT_CIRCUIT != 0 {
        (POD_SHORT_CIRCUIT, false)
    } else if fe.kind() == FE_KIND_CLUSTER_IP {
        let rule = ClusterIpRule::from_trace(steps);
        (rule.text(), rule.masquerades())
    } else if masquerades(fe) {
        (Masquerade::ToNodeAddress.rule(), true)
    } else if matches!(
        fe.kind(),
        FE_KIND_NODE_PORT | FE_KIND_LOAD_BALANCER | FE_KIND_EXTERNAL_IP
    ) {
        (Masquerade::ClientKept.rule(), false)
    } else {
        (Masquerade::ByClusterIpRules.rule(), false)
    };
    if !masquerading && steps & TRACE_MASQ_HAIRPIN != 0 {
        return (HAIRPIN, true);
    }
    // An established flow's source comes from its entry (the decision was
    // its first packet's): applied, whatever the frontend says now.
    if !masquerading && steps & TRACE_SNAT_APPLIED != 0 {
        return (ESTABLISHED_MASQUERADED, true);
    }
    (rule, masquerading)
}

/// The rule by which kube-proxy would masquerade a connection the socket
/// hooks translated (`None`: it would not): its ClusterIP rules, policy
/// Cluster of an external frontend, a node process under policy Local
/// ("masquerade local traffic"), hairpin.
fn socket_rule(
    record: &TraceRecord,
    entry: Entry,
    external_policy_local: Option<bool>,
) -> Option<&'static str> {
    let fe = &record.frontend;
    if record.steps & TRACE_MASQ_HAIRPIN != 0 {
        return Some(HAIRPIN);
    }
    if fe.kind() == FE_KIND_CLUSTER_IP {
        let rule = ClusterIpRule::from_trace(record.steps);
        return rule.masquerades().then(|| rule.text());
    }
    match (external_policy_local?, entry) {
        (false, _) => Some(Masquerade::ToNodeAddress.rule()),
        (true, Entry::Node) => {
            Some("external frontend, policy Local, from the node itself: masquerade local traffic")
        }
        (true, _) => None,
    }
}

/// The decision for a traced connection that a frontend translated,
/// entered at `entry`; `external_policy_local`: the Service port's
/// externalTrafficPolicy (`None`: unknown).
pub fn view(
    record: &TraceRecord,
    entry: Entry,
    external_policy_local: Option<bool>,
) -> MasqueradeView {
    if entry != Entry::External {
        let kube_proxy = socket_rule(record, entry, external_policy_local);
        return MasqueradeView {
            rule: Masquerade::NotNeeded.rule(),
            address: None,
            ports: None,
            port: None,
            applied: false,
            not_applied_because: kube_proxy.map(|_| {
                if entry == Entry::Node {
                    NODE_SOCKET
                } else {
                    POD_SOCKET
                }
            }),
            kube_proxy_masquerades: kube_proxy,
        };
    }
    let (rule, masquerading) = outside_rule(record);
    let steps = record.steps;
    let applied = steps & TRACE_SNAT_APPLIED != 0;
    let address = (masquerading && steps & (TRACE_MASQUERADE | TRACE_SNAT_APPLIED) != 0)
        .then(|| Ipv4Addr::from(record.snat_addr_be.to_ne_bytes()).to_string());
    let not_applied_because = if !masquerading || applied {
        None
    } else if steps & TRACE_SNAT_LOCAL_BACKEND != 0 {
        Some(LOCAL_BACKEND)
    } else if steps & TRACE_SNAT_EXHAUSTED != 0 {
        Some(EXHAUSTED)
    } else if steps & TRACE_CONNECTION != 0 {
        Some(ESTABLISHED_UNMASQUERADED)
    } else {
        None
    };
    MasqueradeView {
        rule,
        address,
        ports: masquerading.then(|| format!("{SNAT_PORT_MIN}-{SNAT_PORT_MAX}")),
        port: applied.then(|| u16::from_be(record.snat_port_be)),
        applied,
        not_applied_because,
        kube_proxy_masquerades: None,
    }
}

/// The step `lb trace` prints for `view`.
pub fn step(view: &MasqueradeView) -> String {
    match (
        &view.ports,
        &view.address,
        view.port,
        view.not_applied_because,
    ) {
        (Some(_), Some(address), Some(port), _) => format!(
            "{}: the source is rewritten to {address}:{port} (the first free port of {} tried toward this backend)",
            view.rule,
            view.ports.as_deref().unwrap_or_default()
        ),
        (Some(ports), Some(address), None, Some(why)) => format!(
            "{}: kube-proxy rewrites the source to {address}, port {ports}; here {why}",
            view.rule
        ),
        (Some(_), None, _, Some(why)) => format!("{}: {why}", view.rule),
        (Some(_), _, _, _) => format!(
            "{}: to the node's address, none known (the agent writes the node's primary IPv4): source kept",
            view.rule
        ),
        (None, _, _, Some(why)) => format!(
            "{}; kube-proxy would masquerade ({}): {why}",
            view.rule,
            view.kube_proxy_masquerades.unwrap_or_default()
        ),
        _ => format!("{}: source kept", view.rule),
    }
}

#[cfg(test)]
mod tests;
