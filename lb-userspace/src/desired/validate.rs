//! Field checks shared by Services and EndpointSlices: what the API server
//! would have refused (standalone mode has none). Each failure becomes a
//! problem naming the field, and only that field's part is skipped.

use std::net::IpAddr;

use super::{addresses::Verdict, family, problems::Problems};
use crate::model::ProblemCode;

/// An address from the API, read as kube-proxy reads it
/// ([`sloppy_ip`](super::sloppy_ip): leading zeros allowed); `None` when it
/// does not parse.
pub(super) fn parse_addr(text: &str) -> Option<IpAddr> {
    super::sloppy_ip::parse_ip_sloppy(text.trim())
}

/// A port number from the API, if it fits a `u16` and is not 0.
pub(super) fn port_number(value: i32) -> Option<u16> {
    u16::try_from(value).ok().filter(|port| *port != 0)
}

pub(super) fn protocol_problem(field: &str, value: Option<&str>) -> String {
    format!(
        "{field} \"{}\" is not TCP, UDP or SCTP",
        value.unwrap_or_default()
    )
}

/// Each entry of a list field with its name ("spec.externalIPs[1]").
pub(super) fn indexed<'a>(field: &str, values: &'a [String]) -> Vec<(String, &'a str)> {
    values
        .iter()
        .enumerate()
        .map(|(i, value)| (format!("{field}[{i}]"), value.as_str()))
        .collect()
}

/// The served addresses among named field values that `check` accepts;
/// invalid entries become problems naming the field, valid ones of another
/// family are skipped ([`family::is_served`]) before any check. Sorted,
/// deduplicated.
pub(super) fn addresses(
    fields: Vec<(String, &str)>,
    object: &str,
    problems: &mut Problems,
    check: impl Fn(&str, IpAddr) -> Verdict,
) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for (field, text) in fields {
        match parse_addr(text) {
            Some(addr) if family::is_served(addr) => match check(&field, addr) {
                Verdict::Accept => out.push(addr),
                Verdict::Warn(code, reason) => {
                    problems.warn(object, code, reason);
                    out.push(addr);
                }
                Verdict::Refuse(code, reason) => problems.push(object, code, reason),
            },
            Some(_) => {}
            None => problems.push(
                object,
                ProblemCode::InvalidAddress,
                format!("{field} \"{text}\" is not an IP address"),
            ),
        }
    }
    out.sort();
    out.dedup();
    out
}
