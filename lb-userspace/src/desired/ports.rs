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
