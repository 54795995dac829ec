//! An IPv4 source range of `loadBalancerSourceRanges`, normalised (host
//! bits cleared, as Go's `net.ParseCIDR` returns the network).

use std::{fmt, net::Ipv4Addr};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceRange {
    pub network: Ipv4Addr,
    /// 0-32.
    pub prefix_len: u8,
}

impl SourceRange {
    /// The range of `addr/prefix_len`, host bits cleared; `None` past /32.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<SourceRange> {
        if prefix_len > 32 {
            return None;
        }
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0);
        Some(SourceRange {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix_len,
        })
    }

    /// The single address `addr` (/32).
    pub fn host(addr: Ipv4Addr) -> SourceRange {
        SourceRange {
            network: addr,
            prefix_len: 32,
        }
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        SourceRange::new(addr, self.prefix_len) == Some(*self)
    }
}

impl fmt::Display for SourceRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl serde::Serialize for SourceRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_its_network_and_holds_its_edges_only() {
        let range = SourceRange::new(Ipv4Addr::new(203, 0, 113, 77), 28).unwrap();
        assert_eq!(range.to_string(), "203.0.113.64/28");
        assert!(range.contains(Ipv4Addr::new(203, 0, 113, 64)));
        assert!(range.contains(Ipv4Addr::new(203, 0, 113, 79)));
        assert!(!range.contains(Ipv4Addr::new(203, 0, 113, 80)));
        assert!(!range.contains(Ipv4Addr::new(203, 0, 113, 63)));
        let all = SourceRange::new(Ipv4Addr::new(1, 2, 3, 4), 0).unwrap();
        assert_eq!(all.to_string(), "0.0.0.0/0");
        assert!(all.contains(Ipv4Addr::new(255, 255, 255, 255)));
        assert_eq!(SourceRange::new(Ipv4Addr::LOCALHOST, 33), None);
    }
}
