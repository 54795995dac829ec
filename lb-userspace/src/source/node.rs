//! The node's own facts: its name and the addresses NodePorts listen on.

use std::net::{IpAddr, Ipv4Addr};

use crate::model::NodeFacts;

const HOSTNAME: &str = "/proc/sys/kernel/hostname";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(
        "cannot read this node's name from {HOSTNAME}: {0}; name the node with `lb agent --node-name`"
    )]
    Hostname(#[source] std::io::Error),
    #[error(
        "cannot list this node's addresses (getifaddrs): {0}; give them with `lb agent --node-address`"
    )]
    Addresses(#[source] nix::Error),
}

/// The node's facts, each one taken from the system when not given: the
/// name from the hostname, the NodePort addresses from the interfaces.
pub fn facts(
    name: Option<String>,
    addresses: Vec<IpAddr>,
    zone: Option<String>,
) -> Result<NodeFacts, NodeError> {
    let name = match name {
        Some(name) => name,
        None => hostname()?,
    };
    let addresses = if addresses.is_empty() {
        local_ipv4_addresses()?
            .into_iter()
            .map(IpAddr::V4)
            .collect()
    } else {
        addresses
    };
    Ok(NodeFacts {
        name,
        addresses,
        zone,
    })
}

pub fn hostname() -> Result<String, NodeError> {
    let name = std::fs::read_to_string(HOSTNAME).map_err(NodeError::Hostname)?;
    Ok(name.trim().to_owned())
}

/// The node's IPv4 addresses, for NodePorts when none are given: every
/// address on every interface of this network namespace except loopback
/// (kube-proxy's default).
pub fn local_ipv4_addresses() -> Result<Vec<Ipv4Addr>, NodeError> {
    let interfaces = nix::ifaddrs::getifaddrs().map_err(NodeError::Addresses)?;
    let addresses = interfaces.filter_map(|interface| {
        let address = interface.address?;
        Some(IpAddr::V4(address.as_sockaddr_in()?.ip()))
    });
    Ok(nodeport_candidates(addresses))
}

/// IPv4, not loopback, each once, sorted (so the plan is the same whatever
/// order the kernel lists interfaces in).
fn nodeport_candidates(addresses: impl IntoIterator<Item = IpAddr>) -> Vec<Ipv4Addr> {
    let mut v4: Vec<Ipv4Addr> = addresses
        .into_iter()
        .filter_map(|address| match address {
            IpAddr::V4(v4) if !v4.is_loopback() => Some(v4),
            _ => None,
        })
        .collect();
    v4.sort();
    v4.dedup();
    v4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_ipv4_without_loopback_once_each_sorted() {
        let listed = [
            "127.0.0.1",
            "192.168.1.5",
            "::1",
            "fd00::1",
            "10.0.0.7",
            "192.168.1.5",
            "127.0.1.1",
        ];
        let candidates = nodeport_candidates(listed.map(|a| a.parse().expect("address")));
        assert_eq!(
            candidates,
            vec![Ipv4Addr::new(10, 0, 0, 7), Ipv4Addr::new(192, 168, 1, 5)]
        );
    }

    #[test]
    fn this_machines_addresses_exclude_loopback() {
        let addresses = local_ipv4_addresses().expect("getifaddrs works here");
        assert!(addresses.iter().all(|a| !a.is_loopback()), "{addresses:?}");
        assert!(addresses.is_sorted());
    }

    #[test]
    fn given_facts_are_kept() {
        let given = vec!["198.51.100.1".parse().expect("address")];
        let facts = facts(Some("node-a".into()), given.clone(), Some("z1".into()))
            .expect("nothing to look up");
        assert_eq!(facts.name, "node-a");
        assert_eq!(facts.addresses, given);
        assert_eq!(facts.zone.as_deref(), Some("z1"));
    }
}
