//! This node's IPv4 routing table (`/proc/net/route`), parsed: its default
//! routes' devices (`--device auto`, `devices`), and where it reaches an
//! endpoint's address: on a device of its own pods (a CNI bridge, a pod's
//! veth), through the network (an external device, a gateway), or nowhere
//! (`--pod-device auto` hooks the first kind, `pod_devices`).
//!
//! Pure: the table is text in, the answer out (the unit tests are the
//! kernel's own format).

use std::{collections::BTreeSet, net::Ipv4Addr};

/// `RTF_UP` and `RTF_GATEWAY` in the kernel's route flags.
const ROUTE_UP: u32 = 0x1;
const ROUTE_GATEWAY: u32 = 0x2;

/// Where an address is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Directly on a device that is not an external one: a pod's device.
    PodDevice(String),
    /// Through an external device or a gateway: another node's pod, whose
    /// replies come back by an external device (XDP).
    Network,
    /// No route at all.
    Unrouted,
}

/// One up route of the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Route {
    device: String,
    /// Network order as the kernel prints it, read as a native `u32`.
    destination: u32,
    mask: u32,
    gateway: bool,
    metric: u32,
}

/// The parsed routing table.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Parses `/proc/net/route` (a header, then tab-separated hex fields:
    /// Iface Destination Gateway Flags RefCnt Use Metric Mask ...). Rows
    /// that do not parse, or are down, are skipped.
    pub fn parse(table: &str) -> RouteTable {
        let routes = table.lines().skip(1).filter_map(route).collect();
        RouteTable { routes }
    }

    /// The devices of the default routes (destination and mask 0.0.0.0),
    /// lowest metric first, each once; never `lo`.
    pub fn default_devices(&self) -> Vec<String> {
        let mut defaults: Vec<&Route> = self
            .routes
            .iter()
            .filter(|r| r.destination == 0 && r.mask == 0 && r.device != "lo")
            .collect();
        defaults.sort_by_key(|r| r.metric);
        let mut devices: Vec<String> = Vec::new();
        for route in defaults {
            if !devices.contains(&route.device) {
                devices.push(route.device.clone());
            }
        }
        devices
    }

    /// How `addr` is reached: the longest matching prefix, the lowest
    /// metric among equals, as the kernel picks in the main table.
    pub fn reach(&self, addr: Ipv4Addr, external: &BTreeSet<String>) -> Reach {
        let key = u32::from_ne_bytes(addr.octets());
        let best = self
            .routes
            .iter()
            .filter(|r| key & r.mask == r.destination & r.mask)
            .max_by_key(|r| {
                (
                    u32::from_be(r.mask).count_ones(),
                    std::cmp::Reverse(r.metric),
                )
            });
        match best {
            None => Reach::Unrouted,
            Some(r) if r.device == "lo" => Reach::Unrouted,
            Some(r) if r.gateway || external.contains(&r.device) => Reach::Network,
            Some(r) => Reach::PodDevice(r.device.clone()),
        }
    }
}

fn route(row: &str) -> Option<Route> {
    let fields: Vec<&str> = row.split_whitespace().collect();
    let [
        device,
        destination,
        _gateway,
        flags,
        _refcnt,
        _use,
        metric,
        mask,
        ..,
    ] = fields[..]
    else {
        return None;
    };
    // The kernel prints the address words as native hex of network-order
    // bytes: `0100000A` is 10.0.0.1 on a little-endian machine.
    let hex = |field: &str| u32::from_str_radix(field, 16).ok();
    let flags = hex(flags)?;
    (flags & ROUTE_UP != 0).then_some(())?;
    Some(Route {
        device: device.to_string(),
        destination: hex(destination)?,
        mask: hex(mask)?,
        gateway: flags & ROUTE_GATEWAY != 0,
        metric: metric.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT";

    /// A node as kindnet and a bridge CNI leave it, in the kernel's format
    /// on this (little-endian) machine: a default route and the node's
    /// subnet on eth0, this node's pod subnet on cni0, one pod's /32 on its
    /// veth, another node's pod subnet via a gateway, and a route that is
    /// down.
    fn node() -> RouteTable {
        let le = |a: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(a));
        let rows = [
            format!(
                "eth0\t{}\t{}\t0003\t0\t0\t0\t{}",
                le([0; 4]),
                le([172, 18, 0, 1]),
                le([0; 4])
            ),
            format!(
                "eth0\t{}\t00000000\t0001\t0\t0\t0\t{}",
                le([172, 18, 0, 0]),
                le([255, 255, 0, 0])
            ),
            format!(
                "cni0\t{}\t00000000\t0001\t0\t0\t0\t{}",
                le([10, 244, 1, 0]),
                le([255, 255, 255, 0])
            ),
            format!(
                "veth1a2b\t{}\t00000000\t0005\t0\t0\t0\t{}",
                le([10, 244, 1, 7]),
                le([255; 4])
            ),
            format!(
                "eth0\t{}\t{}\t0003\t0\t0\t0\t{}",
                le([10, 244, 2, 0]),
                le([172, 18, 0, 3]),
                le([255, 255, 255, 0])
            ),
            format!(
                "down0\t{}\t00000000\t0000\t0\t0\t0\t{}",
                le([10, 9, 0, 0]),
                le([255, 255, 0, 0])
            ),
        ];
        let text = std::iter::once(HEADER.to_string())
            .chain(rows)
            .collect::<Vec<_>>()
            .join("\n");
        RouteTable::parse(&text)
    }

    fn external() -> BTreeSet<String> {
        ["eth0".to_string()].into()
    }

    #[test]
    fn a_pod_of_this_node_is_reached_on_its_bridge_or_its_own_veth() {
        let table = node();
        assert_eq!(
            table.reach(Ipv4Addr::new(10, 244, 1, 5), &external()),
            Reach::PodDevice("cni0".into())
        );
        assert_eq!(
            table.reach(Ipv4Addr::new(10, 244, 1, 7), &external()),
            Reach::PodDevice("veth1a2b".into()),
            "the longest prefix wins"
        );
    }

    #[test]
    fn another_node_s_pod_and_the_node_s_subnet_are_reached_through_the_network() {
        let table = node();
        for addr in [
            Ipv4Addr::new(10, 244, 2, 9),
            Ipv4Addr::new(172, 18, 0, 4),
            Ipv4Addr::new(8, 8, 8, 8),
        ] {
            assert_eq!(table.reach(addr, &external()), Reach::Network, "{addr}");
        }
    }

    #[test]
    fn a_route_that_is_down_or_missing_reaches_nothing() {
        let mut table = node();
        table.routes.retain(|r| r.mask != 0);
        assert_eq!(
            table.reach(Ipv4Addr::new(10, 9, 0, 1), &external()),
            Reach::Unrouted
        );
        assert_eq!(
            table.reach(Ipv4Addr::new(192, 0, 2, 1), &external()),
            Reach::Unrouted
        );
    }

    #[test]
    fn among_equal_prefixes_the_lowest_metric_wins() {
        let le = |a: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(a));
        let text = format!(
            "{HEADER}\nbr1\t{d}\t00000000\t0001\t0\t0\t200\t{m}\nbr0\t{d}\t00000000\t0001\t0\t0\t100\t{m}",
            d = le([10, 1, 0, 0]),
            m = le([255, 255, 0, 0])
        );
        assert_eq!(
            RouteTable::parse(&text).reach(Ipv4Addr::new(10, 1, 2, 3), &BTreeSet::new()),
            Reach::PodDevice("br0".into())
        );
    }
}
