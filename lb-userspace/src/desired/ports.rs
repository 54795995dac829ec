//! A Service's ports, each checked as `ValidateService` and
//! `validateServicePort` (pkg/apis/core/validation) would have: protocol,
//! port number, a unique name and (port, protocol), a unique
//! (nodePort, protocol) inside `--service-node-port-range`, and a name the
//! service map can hold. A refused port is skipped; the Service's other
//! ports keep working.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ServicePort;

use super::{
    names,
    problems::Problems,
    rules::Rules,
    validate::{port_number, protocol_problem},
};
use crate::model::{ProblemCode, Protocol, ServicePortName};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ServiceType {
    ClusterIp,
    NodePort,
    LoadBalancer,
}

/// A Service port with its numbers checked.
#[derive(Debug)]
pub(super) struct PortView {
    pub(super) name: ServicePortName,
    pub(super) port: u16,
    pub(super) node_port: Option<u16>,
}

/// Who the Service is, for naming its ports and its problems.
pub(super) struct Owner<'a> {
    pub(super) namespace: &'a str,
    pub(super) name: &'a str,
    pub(super) object: &'a str,
    pub(super) svc_type: ServiceType,
}

/// The Service's servable ports, in order. Of two ports with the same
/// name, or the same (port, protocol), the first is kept, as the first
/// definition is elsewhere; a repeated (nodePort, protocol) loses only its
/// NodePort.
pub(super) fn port_views(
    ports: &[ServicePort],
    owner: &Owner<'_>,
    rules: &Rules,
    problems: &mut Problems,
) -> Vec<PortView> {
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    let mut node_ports = BTreeSet::new();
    let mut views = Vec::new();
    for (index, port) in ports.iter().enumerate() {
        let Some(mut view) = port_view(index, port, owner, rules, problems) else {
            continue;
        };
        let field = format!("spec.ports[{index}]");
        if !names.insert(view.name.port_name.clone()) {
            problems.push(
                owner.object,
                ProblemCode::DuplicatePort,
                format!(
                    "{field}.name \"{}\" is used by an earlier port: each port of a Service needs its own name; this port is not served",
                    view.name.port_name
                ),
            );
            continue;
        }
        if !numbers.insert((view.port, view.name.protocol)) {
            problems.push(
                owner.object,
                ProblemCode::DuplicatePort,
                format!(
                    "{field}: port {}/{} is used by an earlier port (ValidateService: Duplicate value); this port is not served",
                    view.port, view.name.protocol
                ),
            );
            continue;
        }
        if let Some(node_port) = view.node_port
            && !node_ports.insert((node_port, view.name.protocol))
        {
            problems.push(
                owner.object,
                ProblemCode::DuplicatePort,
                format!(
                    "{field}.nodePort {node_port}/{} is used by an earlier port (ValidateService: Duplicate value); this port is served without it",
                    view.name.protocol
                ),
            );
            view.node_port = None;
        }
        views.push(view);
    }
    views
}

/// One Service port, or `None` (with a problem) when it cannot be served.
fn port_view(
    index: usize,
    port: &ServicePort,
    owner: &Owner<'_>,
    rules: &Rules,
    problems: &mut Problems,
) -> Option<PortView> {
    let object = owner.object;
    let Some(protocol) = Protocol::from_k8s(port.protocol.as_deref()) else {
        let field = format!("spec.ports[{index}].protocol");
        problems.push(
            object,
            ProblemCode::UnknownProtocol,
            protocol_problem(&field, port.protocol.as_deref()),
        );
        return None;
    };
    let Some(number) = port_number(port.port) else {
        // The API types read a missing port as 0.
        let reason = match port.port {
            0 => format!("spec.ports[{index}].port is missing or 0"),
            other => format!("spec.ports[{index}].port {other} is out of range 1-65535"),
        };
        problems.push(object, ProblemCode::PortOutOfRange, reason);
        return None;
    };
    let port_name = port.name.clone().unwrap_or_default();
    let field = format!("spec.ports[{index}].name");
    if let Err(reason) = names::check_port_name(&field, &port_name) {
        problems.push(object, ProblemCode::NameTooLong, reason);
        return None;
    }
    Some(PortView {
        name: ServicePortName {
            namespace: owner.namespace.to_owned(),
            name: owner.name.to_owned(),
            port_name,
            protocol,
        },
        port: number,
        node_port: node_port(index, port, owner, rules, problems),
    })
}

/// The port's nodePort, when its type has NodePorts and it is in the
/// NodePort range. kube-proxy serves any nodePort that is set, so a
/// LoadBalancer with `allocateLoadBalancerNodePorts: false` has NodePorts
/// only where one was given explicitly.
fn node_port(
    index: usize,
    port: &ServicePort,
    owner: &Owner<'_>,
    rules: &Rules,
    problems: &mut Problems,
) -> Option<u16> {
    let object = owner.object;
    let value = port.node_port?;
    if owner.svc_type == ServiceType::ClusterIp {
        problems.warn(
            object,
            ProblemCode::IgnoredField,
            format!("spec.ports[{index}].nodePort is set but the type has no NodePorts; ignored"),
        );
        return None;
    }
    let Some(number) = port_number(value) else {
        problems.push(
            object,
            ProblemCode::PortOutOfRange,
            format!("spec.ports[{index}].nodePort {value} is out of range 1-65535"),
        );
        return None;
    };
    if !rules.node_port_range.contains(number) {
        problems.push(
            object,
            ProblemCode::NodePortOutOfRange,
            format!(
                "spec.ports[{index}].nodePort {number} is outside the NodePort range {}: it could take a port the node itself listens on; the port is served without it, pick a NodePort in the range or start lb with the cluster's --service-node-port-range",
                rules.node_port_range
            ),
        );
        return None;
    }
    Some(number)
}

#[cfg(test)]
mod tests {
    use crate::desired::test_support::*;

    fn state_of(spec: &str) -> DesiredState {
        let text = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc}}\nspec:\n  type: NodePort\n  clusterIP: 10.96.0.5\n{spec}"
        );
        let set = parse_documents("svc.yaml", &text);
        assert_eq!(set.problems, vec![]);
        compute(&set.services, &set.slices, &node("node-a"))
    }

    fn served_ports(state: &DesiredState) -> Vec<String> {
        state
            .frontends
            .iter()
            .filter(|(f, _)| f.scope == Internal)
            .map(|(f, s)| format!("{f} {}", s.service))
            .collect()
    }

    /// Upstream: `ValidateService`, "Check for duplicate Ports, considering
    /// (protocol,port) pairs": the later port is not served, the first is.
    #[test]
    fn a_port_and_protocol_twice_keeps_the_first() {
        let state = state_of(
            "  ports:\n  - {name: a, port: 80}\n  - {name: b, port: 80}\n  - {name: c, port: 80, protocol: UDP}\n",
        );
        assert_eq!(
            state.problems,
            vec![error(
                ProblemCode::DuplicatePort,
                "Service default/svc",
                "spec.ports[1]: port 80/TCP is used by an earlier port (ValidateService: Duplicate value); this port is not served"
            )]
        );
        assert_eq!(
            served_ports(&state),
            vec![
                "10.96.0.5:80/TCP default/svc:a",
                "10.96.0.5:80/UDP default/svc:c"
            ]
        );
    }

    /// Upstream: `validateServicePort`, port names are unique (an unset
    /// name counts: with more than one port each needs one).
    #[test]
    fn a_port_name_twice_keeps_the_first() {
        let state = state_of("  ports:\n  - {port: 80}\n  - {port: 81}\n");
        assert_eq!(state.problems.len(), 1);
        assert_eq!(state.problems[0].code, ProblemCode::DuplicatePort);
        assert_eq!(served_ports(&state), vec!["10.96.0.5:80/TCP default/svc:"]);
    }

    /// Upstream: `ValidateService`, "Check for duplicate NodePorts,
    /// considering (protocol,port) pairs": the later port keeps its
    /// ClusterIP, loses the NodePort; the same number over UDP is another.
    #[test]
    fn a_node_port_twice_is_served_for_the_first_port_only() {
        let state = state_of(
            "  ports:\n  - {name: a, port: 80, nodePort: 30100}\n  - {name: b, port: 81, nodePort: 30100}\n  - {name: c, port: 82, nodePort: 30100, protocol: UDP}\n",
        );
        assert_eq!(state.problems.len(), 1, "{:?}", state.problems);
        assert_eq!(state.problems[0].code, ProblemCode::DuplicatePort);
        let node_ports: Vec<String> = state
            .frontends
            .iter()
            .filter(|(f, s)| f.scope == External && s.kind == NodePort)
            .map(|(f, s)| format!("{f} {}", s.service))
            .collect();
        assert_eq!(
            node_ports,
            vec![
                "192.168.1.10:30100/TCP default/svc:a",
                "192.168.1.10:30100/UDP default/svc:c"
            ]
        );
        assert!(served_ports(&state).contains(&"10.96.0.5:81/TCP default/svc:b".to_owned()));
    }

    /// Upstream: the API server's NodePort allocator takes only ports of
    /// `--service-node-port-range`; the edges of the default 30000-32767.
    #[test]
    fn node_ports_outside_the_range_are_not_served_and_the_edges_are() {
        let state = state_of(
            "  ports:\n  - {name: a, port: 80, nodePort: 30000}\n  - {name: b, port: 81, nodePort: 32767}\n  - {name: c, port: 82, nodePort: 29999}\n  - {name: d, port: 83, nodePort: 32768}\n  - {name: e, port: 84, nodePort: 22}\n",
        );
        let codes: Vec<ProblemCode> = state.problems.iter().map(|p| p.code).collect();
        assert_eq!(codes, vec![ProblemCode::NodePortOutOfRange; 3]);
        let node_ports: BTreeSet<u16> = state
            .frontends
            .iter()
            .filter(|(_, s)| s.kind == NodePort)
            .map(|(f, _)| f.port)
            .collect();
        assert_eq!(node_ports, BTreeSet::from([30000, 32767]));
        assert_eq!(
            served_ports(&state).len(),
            5 + 2,
            "every ClusterIP port stays"
        );
    }
}
