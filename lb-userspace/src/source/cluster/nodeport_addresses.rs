//! `--nodeport-addresses`, as kube-proxy reads it
//! (pkg/proxy/util/nodeport_addresses.go and cmd/kube-proxy/app/server.go).

use std::net::{IpAddr, Ipv4Addr};

use crate::{desired::Cidr, model::NodeFacts};

/// Which of the node's addresses NodePorts listen on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// No CIDR of our family (or a zero CIDR): every local address
    /// (`matchAll`).
    #[default]
    All,
    /// `primary`: the node's primary IPv4 address, as the Node object
    /// gives it, if it is one of the local addresses.
    Primary,
    /// The local addresses inside any of these (IPv4) CIDRs.
    Cidrs(Vec<Cidr>),
}

impl NodePortAddresses {
    /// Parses the flag's values (repeated or comma-separated). `primary`
    /// must stand alone, as kube-proxy's validation requires; CIDRs of the
    /// other family are dropped and a zero CIDR matches everything, as
    /// `NewNodePortAddresses` does for the IPv4 proxier.
    pub fn parse(values: &[String]) -> Result<NodePortAddresses, String> {
        let values: Vec<&str> = values
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        if values == ["primary"] {
            return Ok(NodePortAddresses::Primary);
        }
        let mut cidrs = Vec::new();
        for value in values {
            let cidr: Cidr = value.parse().map_err(|_| {
                format!(
                    "--nodeport-addresses {value:?}: not a CIDR; give CIDRs such as 10.0.0.0/8, \
                     or `primary` alone for the node's primary address"
                )
            })?;
            let network = value.split('/').next().unwrap_or_default();
            if network.parse::<Ipv4Addr>().is_err() {
                continue; // IPv6: another family's proxier
            }
            if value.ends_with("/0") {
                return Ok(NodePortAddresses::All);
            }
            cidrs.push(cidr);
        }
        if cidrs.is_empty() {
            Ok(NodePortAddresses::All)
        } else {
            Ok(NodePortAddresses::Cidrs(cidrs))
        }
    }

    /// The NodePort addresses among the node's `local` addresses (its
    /// interfaces, loopback excluded); `primary` is the node's primary
    /// IPv4 address from its Node object, if known.
    pub fn select(&self, local: &[Ipv4Addr], primary: Option<Ipv4Addr>) -> Vec<IpAddr> {
        let chosen = local.iter().copied().filter(|address| match self {
            NodePortAddresses::All => true,
            // kube-proxy turns `primary` into `<node IP>/32`.
            NodePortAddresses::Primary => Some(*address) == primary,
            NodePortAddresses::Cidrs(cidrs) => {
                cidrs.iter().any(|cidr| cidr.contains(IpAddr::V4(*address)))
            }
        });
        chosen.map(IpAddr::V4).collect()
    }

    /// Standalone mode's facts (given or the interfaces'), with the CIDRs
    /// applied; `primary` needs a Node object, so only cluster mode has it.
    pub fn filter_configured(&self, mut node: NodeFacts) -> Result<NodeFacts, String> {
        match self {
            NodePortAddresses::All => Ok(node),
            NodePortAddresses::Primary => Err(
                "--nodeport-addresses primary needs cluster mode (the Node object's address); \
                 with --manifests give the addresses with --node-address"
                    .to_owned(),
            ),
            NodePortAddresses::Cidrs(_) => {
                let v4: Vec<Ipv4Addr> = node
                    .addresses
                    .iter()
                    .filter_map(|a| match a {
                        IpAddr::V4(v4) => Some(*v4),
                        IpAddr::V6(_) => None,
                    })
                    .collect();
                node.addresses = self.select(&v4, None);
                Ok(node)
            }
        }
    }
}
