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
