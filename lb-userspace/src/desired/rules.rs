//! The cluster's own settings that decide what is valid, as the API server
//! and kube-proxy are told them: the Service CIDRs
//! (`--service-cluster-ip-range`), the NodePort range
//! (`--service-node-port-range`), and the externalIP ranges the operator
//! owns (the DenyServiceExternalIPs / externalip-webhook pattern).

use std::{fmt, net::IpAddr, ops::RangeInclusive, str::FromStr};

/// What the agent is told about the cluster; the defaults check nothing
/// that needs the cluster's settings, except the NodePort range, whose
/// default is the API server's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// ClusterIPs must be in one of these; empty: not checked.
    pub service_cidrs: Vec<Cidr>,
    pub node_port_range: PortRange,
    /// externalIPs must be in one of these; empty: any (kube-proxy's
    /// behaviour), with a warning for the node's own addresses.
    pub allowed_external_ip_cidrs: Vec<Cidr>,
    /// `--service-proxy-name`: serve the Services labelled
    /// `service.kubernetes.io/service-proxy-name` with this name instead of
    /// the unlabelled ones.
    pub service_proxy_name: Option<String>,
}

impl Rules {
    /// The service CIDRs' IPv4 prefixes, for the datapath's drop of
    /// unallocated ClusterIPs.
    pub fn ipv4_service_cidrs(&self) -> std::collections::BTreeSet<crate::model::SourceRange> {
        self.service_cidrs
            .iter()
            .filter_map(Cidr::ipv4_prefix)
            .collect()
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            service_cidrs: Vec::new(),
            node_port_range: PortRange::DEFAULT_NODE_PORTS,
            allowed_external_ip_cidrs: Vec::new(),
            service_proxy_name: None,
        }
    }
}

/// Why a command-line value is not a CIDR or a port range.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error(
        "\"{0}\" is not a CIDR: write an address, a slash and a prefix length, e.g. 10.96.0.0/12"
    )]
    Cidr(String),
    #[error(
        "\"{0}\" is not a port range: write first-last within 1-65535, e.g. 30000-32767 (or first+count, or one port)"
    )]
    PortRange(String),
}

/// An IP prefix, e.g. `10.96.0.0/12`; host bits are ignored, as Go's
/// `net.ParseCIDR` does for the network it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The IPv4 prefix, host bits cleared (`None` for IPv6).
    pub fn ipv4_prefix(&self) -> Option<crate::model::SourceRange> {
        match self.network {
            IpAddr::V4(net) => crate::model::SourceRange::new(net, self.prefix),
            IpAddr::V6(_) => None,
        }
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.network, addr) {
            (IpAddr::V4(net), IpAddr::V4(addr)) => {
                masked(u32::from(net).into(), self.prefix, 32)
                    == masked(u32::from(addr).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(addr)) => {
                masked(u128::from(net), self.prefix, 128)
                    == masked(u128::from(addr), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `width`-bit number.
fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
    let shift = u32::from(width - prefix);
    bits.checked_shr(shift).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || RuleError::Cidr(text.to_owned());
        let (addr, prefix) = text.split_once('/').ok_or_else(invalid)?;
        let network: IpAddr = addr.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        if prefix > width {
            return Err(invalid());
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// An inclusive port range, written as kube-proxy's and the API server's
/// `--service-node-port-range` (`utilnet.ParsePortRange`): `first-last`,
/// `first+count` (first to first+count), or one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// The API server's default.
    pub const DEFAULT_NODE_PORTS: PortRange = PortRange {
        first: 30000,
        last: 32767,
    };

    pub fn contains(&self, port: u16) -> bool {
        self.range().contains(&port)
    }

    fn range(&self) -> RangeInclusive<u16> {
        self.first..=self.last
    }
}

impl FromStr for PortRange {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || RuleError::PortRange(text.to_owned());
        let number = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p != 0);
        let (first, last) = if let Some((first, last)) = text.split_once('-') {
            (number(first), number(last))
        } else if let Some((first, count)) = text.split_once('+') {
            let first = number(first);
            let count = count.trim().parse::<u16>().ok();
            (first, first.zip(count).and_then(|(f, c)| f.checked_add(c)))
        } else {
            (number(text), number(text))
        };
        match (first, last) {
            (Some(first), Some(last)) if first <= last => Ok(PortRange { first, last }),
            _ => Err(invalid()),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_contain_as_go_net_parse_cidr() {
        let cidr: Cidr = "10.96.0.0/12".parse().unwrap();
        assert!(cidr.contains("10.96.0.1".parse().unwrap()));
        assert!(cidr.contains("10.111.255.255".parse().unwrap()));
        assert!(!cidr.contains("10.112.0.0".parse().unwrap()));
        assert!(!cidr.contains("fd00::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let host: Cidr = "192.0.2.7/32".parse().unwrap();
        assert!(host.contains("192.0.2.7".parse().unwrap()));
        assert!(!host.contains("192.0.2.8".parse().unwrap()));
        let v6: Cidr = "fd00:10:96::/112".parse().unwrap();
        assert!(v6.contains("fd00:10:96::ffff".parse().unwrap()));
        assert_eq!(v6.to_string(), "fd00:10:96::/112");
        for bad in ["10.96.0.0", "10.96.0.0/33", "10.96.0/12", "x/8", "::/129"] {
            assert_eq!(
                bad.parse::<Cidr>(),
                Err(RuleError::Cidr(bad.into())),
                "{bad}"
            );
        }
    }

    /// Upstream: `k8s.io/apimachinery/pkg/util/net.ParsePortRange`.
    #[test]
    fn port_ranges_parse_as_utilnet_parse_port_range() {
        let range: PortRange = "30000-32767".parse().unwrap();
        assert_eq!(range, PortRange::DEFAULT_NODE_PORTS);
        assert!(range.contains(30000) && range.contains(32767));
        assert!(!range.contains(29999) && !range.contains(32768));
        assert_eq!("30000+2767".parse::<PortRange>(), Ok(range));
        let one: PortRange = "8080".parse().unwrap();
        assert!(one.contains(8080) && !one.contains(8081));
        assert_eq!(range.to_string(), "30000-32767");
        for bad in ["", "0-100", "100-99", "1-65536", "a-b", "65535+1", "-"] {
            assert_eq!(
                bad.parse::<PortRange>(),
                Err(RuleError::PortRange(bad.into())),
                "{bad}"
            );
        }
    }
}
