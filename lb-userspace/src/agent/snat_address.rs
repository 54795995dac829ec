//! The address new external connections are masqueraded to, kept in the
//! datapath (`lb_snat_addr_v1`): the node's primary IPv4 address, the
//! first IPv4 address of its facts (cluster mode: the Node object's
//! addresses in the order the API lists them, InternalIP first; manifest
//! mode: `--node-address`'s first). kube-proxy's `masquerade` takes the
//! address of the device the packet leaves by; on a node with one
//! external device that is the same address.

use std::net::{IpAddr, Ipv4Addr};

use crate::{
    datapath::{DatapathMaps, MapsError},
    model::NodeFacts,
};

/// The node's primary IPv4 address, if it has one.
pub fn primary_ipv4(node: &NodeFacts) -> Option<Ipv4Addr> {
    node.addresses.iter().find_map(|addr| match addr {
        IpAddr::V4(v4) if !v4.is_unspecified() && !v4.is_loopback() => Some(*v4),
        _ => None,
    })
}

/// Writes the masquerade address when the node's facts change it.
#[derive(Debug, Default)]
pub(super) struct SnatAddress {
    /// What the datapath holds, as last written (`None`: not written yet).
    written: Option<Option<Ipv4Addr>>,
}

impl SnatAddress {
    /// Makes the datapath's address the node's primary IPv4.
    pub fn sync(&mut self, node: &NodeFacts, maps: &mut dyn DatapathMaps) -> Result<(), MapsError> {
        let wanted = primary_ipv4(node);
        if self.written == Some(wanted) {
            return Ok(());
        }
        maps.set_snat_address(wanted)?;
        self.written = Some(wanted);
        Ok(())
    }

    /// Writes again at the next sync (a resync repairs what changed behind
    /// the agent's back).
    pub fn forget(&mut self) {
        self.written = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::MemoryMaps;

    fn node(addresses: &[&str]) -> NodeFacts {
        NodeFacts {
            name: "node-a".into(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            zone: None,
        }
    }

    #[test]
    fn the_first_ipv4_address_is_the_primary_one() {
        let facts = node(&["2001:db8::1", "192.168.0.2", "192.168.1.2"]);
        assert_eq!(primary_ipv4(&facts), Some(Ipv4Addr::new(192, 168, 0, 2)));
        assert_eq!(primary_ipv4(&node(&["2001:db8::1"])), None);
        assert_eq!(
            primary_ipv4(&node(&["127.0.0.1", "10.0.0.5"])),
            Some(Ipv4Addr::new(10, 0, 0, 5))
        );
    }

    #[test]
    fn written_when_it_changes_and_again_after_forget() {
        let mut maps = MemoryMaps::default();
        let mut snat = SnatAddress::default();
        snat.sync(&node(&["192.168.0.2"]), &mut maps).unwrap();
        assert_eq!(maps.snat_address, Some(Ipv4Addr::new(192, 168, 0, 2)));
        maps.snat_address = None;
        snat.sync(&node(&["192.168.0.2"]), &mut maps).unwrap();
        assert_eq!(maps.snat_address, None, "unchanged facts write nothing");
        snat.forget();
        snat.sync(&node(&["192.168.0.2"]), &mut maps).unwrap();
        assert_eq!(maps.snat_address, Some(Ipv4Addr::new(192, 168, 0, 2)));
        snat.sync(&node(&[]), &mut maps).unwrap();
        assert_eq!(maps.snat_address, None, "no address: nothing masqueraded");
    }
}
