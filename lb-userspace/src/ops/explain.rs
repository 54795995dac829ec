//! `lb trace` reports: the datapath's own decisions for one packet (a
//! `TraceRecord` from the live program run in dry-run mode) told in
//! Kubernetes terms.

use std::net::SocketAddrV4;

use lb_common::{
    FrontendValue, TRACE_AFFINITY_HIT, TRACE_AFFINITY_SET, TRACE_BACKEND, TRACE_CONNECTION,
    TRACE_FRONTEND, TRACE_MAGLEV, TraceRecord, reason::Reason,
};
use serde::Serialize;

mod algorithm;
mod masquerade;
pub use masquerade::MasqueradeView;

use crate::{
    datapath::codec::{backend_flags, frontend_entry},
    model::{FrontendKind, Protocol, ServicePortName, WhenEmpty},
    ops::inspect::{Inspector, kind_name, socket},
};

/// Where the traced packet enters the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Entry {
    /// From outside, through an external device (XDP).
    External,
    /// From a pod on this node (socket hooks).
    Pod,
    /// From a process of the node itself (socket hooks).
    Node,
}

impl Entry {
    /// As the JSON document and the command line spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Entry::External => "external",
            Entry::Pod => "pod",
            Entry::Node => "node",
        }
    }
}

/// The stable document `lb trace -o json` prints.
#[derive(Debug, Serialize)]
pub struct TraceReport {
    /// `dnat`, `pass`, `drop` or `reject`.
    pub verdict: &'static str,
    /// `ip:port` the packet or connection goes to, when translated.
    pub backend: Option<String>,
    /// Whether the source would be rewritten (masquerade applied: see
    /// `masquerade` for the address, the port and the rule).
    pub snat: bool,
    /// kube-proxy's masquerade decision for a translated connection: the
    /// rule, the address and ports it would use.
    pub masquerade: Option<MasqueradeView>,
    /// `namespace/name:portname` of the frontend that matched.
    pub service: Option<String>,
    /// The datapath's stable reason name (see `lb stats`).
    pub reason: &'static str,
    pub entry: Entry,
    pub packet: PacketView,
    pub frontend: Option<FrontendMatch>,
    /// `connection-table`, `maglev` or `socket-hash`.
    pub decided_by: Option<&'static str>,
    pub maglev_slot: Option<u32>,
    pub backend_state: Option<&'static str>,
    /// Each decision, in order, in words.
    pub steps: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PacketView {
    pub source: String,
    pub destination: String,
    pub protocol: Protocol,
}

#[derive(Debug, Serialize)]
pub struct FrontendMatch {
    pub address: String,
    pub kind: &'static str,
    pub scope: &'static str,
    /// The traffic policy that chose this frontend's endpoints.
    pub policy: String,
    pub backend_count: u32,
}

pub fn report(
    entry: Entry,
    source: SocketAddrV4,
    destination: SocketAddrV4,
    protocol: Protocol,
    record: &TraceRecord,
    inspector: &Inspector,
) -> TraceReport {
    let reason = Reason::from_index(record.reason).unwrap_or(Reason::PassMalformed);
    let translated = record.steps & TRACE_BACKEND != 0;
    let verdict = verdict(reason, translated);
    let mut steps = Vec::new();
    let packet = PacketView {
        source: source.to_string(),
        destination: destination.to_string(),
        protocol,
    };
    let socket_entry = entry != Entry::External;
    steps.push(match entry {
        Entry::External => "enters from outside the node: XDP on the external device".to_string(),
        Entry::Pod | Entry::Node => {
            "connect()/sendmsg() from this node: the socket hooks".to_string()
        }
    });

    let mut service = None;
    let mut frontend = None;
    if record.steps & TRACE_FRONTEND == 0 {
        steps.push(format!(
            "no frontend at {destination}/{protocol} for {} traffic: {}",
            if socket_entry { "internal" } else { "external" },
            if socket_entry {
                "the socket is left alone"
            } else {
                "passed to the stack untouched"
            }
        ));
    } else {
        let fe = &record.frontend;
        let name = inspector.service_name(fe.service_id);
        let info = inspector.service(fe.service_id);
        // A pod of another node is short-circuited past
        // externalTrafficPolicy Local to the internal-scope entry, and a
        // ClusterIP from outside is served by its internal-scope entry.
        let short_circuit =
            record.steps & lb_common::masquerade_rules::TRACE_MASQ_POD_SHORT_CIRCUIT != 0;
        let policy = policy_text(fe, socket_entry || short_circuit, info);
        let internal = socket_entry || short_circuit || fe.kind() == lb_common::FE_KIND_CLUSTER_IP;
        let scope = scope_name(internal);
        steps.push(format!(
            "frontend {destination}/{protocol} ({}, {} scope) of {}",
            kind_name(fe),
            scope,
            name.as_deref().unwrap_or("an unnamed service")
        ));
        steps.push(format!(
            "{policy}: {} backend(s) to choose from",
            fe.backend_count
        ));
        if info.as_ref().is_some_and(|(_, i)| i.topology_aware) {
            steps.push(
                "topology hints narrowed the cluster-wide endpoints to this zone".to_string(),
            );
        }
        frontend = Some(FrontendMatch {
            address: destination.to_string(),
            kind: kind_name(fe),
            scope,
            policy,
            backend_count: fe.backend_count,
        });
        service = name;
    }

    let denied = record.steps & lb_common::TRACE_SOURCE_RANGE_DENIED != 0;
    if let Some(step) = source_range_step(record.steps, source, socket_entry) {
        steps.push(step);
    }
    let decided_by = if denied {
        Some("source-ranges")
    } else if record.steps & TRACE_CONNECTION != 0 {
        steps.push(
            "the connection table decided: an established flow keeps its backend".to_string(),
        );
        Some("connection-table")
    } else if record.steps & TRACE_AFFINITY_HIT != 0 {
        steps.push(format!(
            "sessionAffinity ClientIP: this client is remembered for backend {} (it chose it less than {}s ago)",
            record.backend_id,
            record.frontend.affinity_timeout_s()
        ));
        Some("session-affinity")
    } else if record.steps & TRACE_MAGLEV != 0 {
        // The table's size, read back (tables are sized per backend count).
        let size = inspector
            .maps()
            .table(record.frontend.table_id)
            .map_or(0, |slots| slots.len());
        let (step, decided_by) = algorithm::slot_step(record, size);
        steps.push(step);
        if record.steps & TRACE_AFFINITY_SET != 0 {
            steps.push(format!(
                "sessionAffinity ClientIP: the choice is remembered for this client for {}s",
                record.frontend.affinity_timeout_s()
            ));
        }
        Some(decided_by)
    } else {
        None
    };

    let mut backend = None;
    let mut backend_state = None;
    let mut masquerade_view = None;
    if translated {
        let address = socket(record.nat_addr_be, record.nat_port_be);
        let flags = inspector.backend(record.backend_id).map(backend_flags);
        let state = match flags {
            Some(f) if f.terminating => "terminating",
            Some(_) => "ready",
            None => "unknown",
        };
        let why = match flags {
            Some(f) if f.terminating => {
                "serving but terminating: chosen because no endpoint is ready"
            }
            Some(f) if f.local => "ready, on this node",
            Some(_) => "ready, on another node",
            None => "no longer a backend (the established flow keeps it)",
        };
        steps.push(format!(
            "{} {address}: {why}",
            if socket_entry {
                "the socket connects straight to"
            } else {
                "destination rewritten to"
            }
        ));
        let policy_local = inspector
            .service(record.frontend.service_id)
            .map(|(_, info)| info.external_policy_local);
        let view = masquerade::view(record, entry, policy_local);
        steps.push(masquerade::step(&view));
        masquerade_view = Some(view);
        backend = Some(address);
        backend_state = Some(state);
    }
    steps.push(final_words(reason, verdict, socket_entry));

    TraceReport {
        verdict,
        backend,
        snat: masquerade_view.as_ref().is_some_and(|view| view.applied),
        masquerade: masquerade_view,
        service,
        reason: reason.name(),
        entry,
        packet,
        frontend,
        decided_by,
        maglev_slot: (record.steps & TRACE_MAGLEV != 0).then_some(record.slot),
        backend_state,
        steps,
    }
}

fn verdict(reason: Reason, translated: bool) -> &'static str {
    match reason {
        _ if translated => "dnat",
        Reason::RejectNoEndpoints | Reason::RejectClusterIpPort => "reject",
        // Every drop reason's name says so (`drop_*`).
        reason if reason.name().starts_with("drop_") => "drop",
        _ => "pass",
    }
}

fn final_words(reason: Reason, verdict: &str, socket_entry: bool) -> String {
    match (verdict, socket_entry) {
        ("reject", _) if reason == Reason::RejectClusterIpPort => format!(
            "rejected: the ClusterIP's Service exposes no such port or protocol (kube-proxy's \"Reject traffic to invalid ports of ClusterIPs\"); {}",
            if socket_entry {
                "connect() fails with ECONNREFUSED"
            } else {
                "ICMP port unreachable goes back to the client"
            }
        ),
        ("drop", _) if reason == Reason::DropUnallocatedClusterIp => format!(
            "dropped: the address is inside a --service-cidr but no ClusterIP (kube-proxy's \"Drop traffic to unallocated ClusterIPs\"){}",
            if socket_entry {
                "; connect() fails with EPERM"
            } else {
                ""
            }
        ),
        ("reject", false) => {
            "rejected: the Service has no endpoints; ICMP port unreachable goes back to the client"
                .into()
        }
        ("reject", true) => {
            "rejected: the Service has no endpoints; connect() fails with ECONNREFUSED".into()
        }
        ("drop", _) if reason == Reason::DropNoLocalEndpoint => {
            "dropped: the traffic policy is Local and no endpoint runs on this node (as kube-proxy)"
                .into()
        }
        ("drop", false) if reason == Reason::DropSourceRange => {
            "dropped: the source is outside loadBalancerSourceRanges (as kube-proxy's firewall chain)"
                .into()
        }
        ("drop", true) if reason == Reason::DropSourceRange => {
            "refused: the source is outside loadBalancerSourceRanges; connect() fails with EPERM"
                .into()
        }
        ("drop", _) if reason == Reason::DropCtBackendGone => {
            "dropped: the flow's backend is gone (no EndpointSlice lists its pod any more, or its id names another address); a SYN chooses again (drop_ct_backend_gone)"
                .into()
        }
        ("drop", _) => format!("dropped ({})", reason.name()),
        ("dnat", _) => format!("verdict: translated ({})", reason.name()),
        _ => format!("verdict: passed ({})", reason.name()),
    }
}

/// The loadBalancerSourceRanges decision, when the frontend has ranges.
fn source_range_step(steps: u32, source: SocketAddrV4, socket_entry: bool) -> Option<String> {
    let whose = if socket_entry {
        "the socket's bound address"
    } else {
        "the packet's source"
    };
    if steps & lb_common::TRACE_SOURCE_RANGE_DENIED != 0 {
        Some(format!(
            "loadBalancerSourceRanges: {whose} {} is outside every range of the Service",
            source.ip()
        ))
    } else if steps & lb_common::TRACE_SOURCE_RANGE_ALLOWED != 0 {
        Some(format!(
            "loadBalancerSourceRanges: {whose} {} is inside a range of the Service",
            source.ip()
        ))
    } else {
        None
    }
}

fn scope_name(socket_entry: bool) -> &'static str {
    if socket_entry { "internal" } else { "external" }
}

/// Which Kubernetes policy chose the endpoints of this frontend and scope.
fn policy_text(
    fe: &FrontendValue,
    socket_entry: bool,
    info: Option<&(ServicePortName, crate::model::ServicePortInfo)>,
) -> String {
    let Some((_, info)) = info else {
        return "policy unknown".to_string();
    };
    let local = |yes: bool| if yes { "Local" } else { "Cluster" };
    let entry = frontend_entry(fe);
    let mut text = if entry.kind == Some(FrontendKind::ClusterIp) {
        format!(
            "internalTrafficPolicy={}",
            local(info.internal_policy_local)
        )
    } else if socket_entry {
        "pods and the node reach every endpoint (externalTrafficPolicy does not apply to them)"
            .to_string()
    } else {
        format!(
            "externalTrafficPolicy={}",
            local(info.external_policy_local)
        )
    };
    if fe.backend_count == 0 {
        text.push_str(if entry.when_empty == WhenEmpty::Drop {
            ", and no endpoint on this node"
        } else {
            ", and the Service has no endpoints"
        });
    }
    text
}
