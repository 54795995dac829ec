//! Which address family this node serves: IPv4 only, for now.
//!
//! The one place IPv6 is turned away. IPv6 addresses and slices are valid
//! (a dual-stack cluster is not broken), so they are skipped without a
//! problem until the datapath serves IPv6; then this file changes, and no
//! other code decides what is skipped.

use std::net::IpAddr;

/// Whether a valid address may become a frontend or a backend.
pub(super) fn is_served(addr: IpAddr) -> bool {
    addr.is_ipv4()
}

/// Whether the endpoints of a slice with this `addressType` are read:
/// `Ok(false)` for valid types that are skipped (IPv6 for now; FQDN, which
/// kube-proxy never proxies), `Err` with the problem for invalid ones.
pub(super) fn slice_is_served(address_type: &str) -> Result<bool, String> {
    match address_type {
        "IPv4" => Ok(true),
        "IPv6" | "FQDN" => Ok(false),
        "" => Err("addressType is missing".to_owned()),
        other => Err(format!("addressType \"{other}\" is not IPv4, IPv6 or FQDN")),
    }
}
