//! Names the service map must hold whole: it stores namespace, name and
//! port name in fixed-size, NUL-terminated byte arrays (lb-common's
//! `ServiceInfo`), and a name cut to fit would name another Service.
//! Kubernetes allows no longer ones (DNS labels of 63 characters, port names
//! of 15: `IsDNS1123Label`, `IsValidPortName`), so only a manifest the API
//! server would have refused is refused here.

use lb_common::{NAME_LEN, PORT_NAME_LEN};

/// Longest namespace or Service name the service map holds, in bytes.
pub const MAX_NAME_BYTES: usize = NAME_LEN - 1;
/// Longest Service port name the service map holds, in bytes.
pub const MAX_PORT_NAME_BYTES: usize = PORT_NAME_LEN - 1;

/// A namespace or Service name that fits; the problem's reason otherwise.
pub(super) fn check_name(field: &str, value: &str) -> Result<(), String> {
    check(field, value, MAX_NAME_BYTES, "a DNS label")
}

pub(super) fn check_port_name(field: &str, value: &str) -> Result<(), String> {
    check(
        field,
        value,
        MAX_PORT_NAME_BYTES,
        "a port name (IANA_SVC_NAME)",
    )
}

fn check(field: &str, value: &str, max: usize, what: &str) -> Result<(), String> {
    if value.len() <= max {
        return Ok(());
    }
    Err(format!(
        "{field} is {} bytes long, more than {what} may be ({max}) and than the service map holds; not served, shorten it",
        value.len()
    ))
}

#[cfg(test)]
mod tests {
    use crate::{datapath::codec, desired::test_support::*};

    fn service(namespace: &str, name: &str, port_name: &str) -> DesiredState {
        let text = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  clusterIP: 10.96.0.5\n  ports: [{{name: \"{port_name}\", port: 80}}]\n"
        );
        let set = parse_documents("svc.yaml", &text);
        assert_eq!(set.problems, vec![]);
        compute(&set.services, &set.slices, &node("node-a"))
    }

    /// Upstream: `IsDNS1123Label` (63) for namespace and name,
    /// `IsValidPortName` (15) for port names; at the limit the name goes
    /// through the service map whole, one past it is refused, never cut.
    #[test]
    fn names_at_the_limit_are_stored_whole_and_one_more_is_refused() {
        let (ns, name, port) = ("n".repeat(63), "s".repeat(63), "p".repeat(15));
        let state = service(&ns, &name, &port);
        assert_eq!(state.problems, vec![]);
        let (spn, info) = state.services.iter().next().expect("one service port");
        let stored = codec::service_from_info(&codec::service_info(spn, info));
        assert_eq!(stored.map(|(back, _)| back), Some(spn.clone()));

        for (ns, name, port, field) in [
            (
                "n".repeat(64),
                "s".to_owned(),
                "p".to_owned(),
                "metadata.namespace",
            ),
            (
                "n".to_owned(),
                "s".repeat(64),
                "p".to_owned(),
                "metadata.name",
            ),
            (
                "n".to_owned(),
                "s".to_owned(),
                "p".repeat(16),
                "spec.ports[0].name",
            ),
        ] {
            let state = service(&ns, &name, &port);
            assert!(state.frontends.is_empty(), "{field}: not served");
            assert_eq!(state.problems.len(), 1, "{field}");
            assert_eq!(state.problems[0].code, ProblemCode::NameTooLong);
            assert!(state.problems[0].reason.starts_with(field), "{field}");
        }
    }
}
