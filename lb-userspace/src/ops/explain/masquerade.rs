//! The masquerade part of a trace report: kube-proxy's decision for the
//! traced connection (`lb_common::snat`), as the agent encoded it in the
//! frontend (`FE_FLAG_MASQUERADE`) and the datapath recorded it (the
//! node's address, `TRACE_MASQUERADE`).

use std::net::Ipv4Addr;

use lb_common::{
    FE_KIND_EXTERNAL_IP, FE_KIND_LOAD_BALANCER, FE_KIND_NODE_PORT, TraceRecord,
    snat::{Masquerade, SNAT_PORT_MAX, SNAT_PORT_MIN, TRACE_MASQUERADE, masquerades},
};
use serde::Serialize;

/// What happens to the traced connection's source.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct MasqueradeView {
    /// The rule that decided, in words.
    pub rule: &'static str,
    /// The address kube-proxy would masquerade to (the node's primary IPv4).
    pub address: Option<String>,
    /// The source ports a masqueraded connection's port comes from.
    pub ports: Option<String>,
    /// Whether this datapath rewrites the source: not yet (README, "Not
    /// built yet").
    pub applied: bool,
}

/// The decision for a traced connection that a frontend translated
/// (`socket_entry`: the socket hooks saw it).
pub fn view(record: &TraceRecord, socket_entry: bool) -> MasqueradeView {
    let fe = &record.frontend;
    let decision = if socket_entry {
        Masquerade::NotNeeded
    } else if masquerades(fe) {
        Masquerade::ToNodeAddress
    } else if matches!(
        fe.kind(),
        FE_KIND_NODE_PORT | FE_KIND_LOAD_BALANCER | FE_KIND_EXTERNAL_IP
    ) {
        Masquerade::ClientKept
    } else {
        Masquerade::NotTranslated
    };
    let masquerading = decision == Masquerade::ToNodeAddress;
    let address = (masquerading && record.steps & TRACE_MASQUERADE != 0)
        .then(|| Ipv4Addr::from(record.snat_addr_be.to_ne_bytes()).to_string());
    MasqueradeView {
        rule: decision.rule(),
        address,
        ports: masquerading.then(|| format!("{SNAT_PORT_MIN}-{SNAT_PORT_MAX}")),
        applied: false,
    }
}

/// The step `lb trace` prints for `view`.
pub fn step(view: &MasqueradeView) -> String {
    match (&view.ports, &view.address) {
        (Some(ports), Some(address)) => format!(
            "{}: kube-proxy rewrites the source to {address}, port {ports}; this datapath does not rewrite it yet (source kept)",
            view.rule
        ),
        (Some(_), None) => format!(
            "{}: to the node's address, decided at the connection's first packet (none recorded here); this datapath does not rewrite it yet (source kept)",
            view.rule
        ),
        _ => format!("{}: source kept", view.rule),
    }
}

#[cfg(test)]
mod tests {
    use lb_common::{FE_KIND_CLUSTER_IP, FE_KIND_SHIFT, FrontendValue, snat::FE_FLAG_MASQUERADE};

    use super::*;

    fn record(kind: u32, flags: u32, steps: u32) -> TraceRecord {
        TraceRecord {
            steps,
            frontend: FrontendValue {
                flags: kind << FE_KIND_SHIFT | flags,
                ..FrontendValue::default()
            },
            snat_addr_be: u32::from_ne_bytes([192, 168, 0, 2]),
            ..TraceRecord::default()
        }
    }

    #[test]
    fn policy_cluster_names_the_address_and_ports() {
        // TestInternalExternalMasquerade "external to NodePort": masq true.
        let v = view(
            &record(FE_KIND_NODE_PORT, FE_FLAG_MASQUERADE, TRACE_MASQUERADE),
            false,
        );
        assert_eq!(v.rule, "external traffic, policy Cluster: masquerade");
        assert_eq!(v.address.as_deref(), Some("192.168.0.2"));
        assert_eq!(v.ports.as_deref(), Some("61000-65535"));
        assert!(!v.applied);
        assert!(step(&v).contains("192.168.0.2"), "{}", step(&v));
    }

    #[test]
    fn policy_local_keeps_the_client() {
        // "external to LB with eTP:Local": masq false.
        let v = view(&record(FE_KIND_LOAD_BALANCER, 0, 0), false);
        assert_eq!(
            v.rule,
            "external traffic, policy Local: client address kept"
        );
        assert_eq!((v.address, v.ports), (None, None));
    }

    #[test]
    fn the_socket_path_needs_none() {
        let v = view(&record(FE_KIND_CLUSTER_IP, 0, 0), true);
        assert_eq!(v.rule, Masquerade::NotNeeded.rule());
        assert_eq!(step(&v), format!("{}: source kept", v.rule));
    }
}
