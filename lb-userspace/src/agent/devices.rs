//! Which devices the packet hooks attach to: the names given, or with
//! `--device auto` the devices of this network namespace's IPv4 default
//! routes, so one DaemonSet serves nodes whose uplink is named differently
//! (`eth0`, `ens5`, `enp1s0`, a bond).
//!
//! Why the default route: north-south traffic (NodePorts, LoadBalancer IPs,
//! externalIPs) arrives on the device that reaches outside the node, which
//! is the one the node routes the world through. Devices added after the
//! agent started are not followed: restart the agent (or name them).

use std::{fs, io, path::Path};

/// The word that asks for autodetection.
pub const AUTO: &str = "auto";

/// The routing table as the kernel prints it for the calling thread's
/// network namespace (`/proc/net` would be the main thread's).
const ROUTES: &str = "/proc/thread-self/net/route";

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "cannot read the routing table {path} for `--device auto`: {source}; name the devices with `--device`"
    )]
    Routes {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "`--device auto` found no IPv4 default route in this network namespace; add one, or name the external devices with `--device`"
    )]
    NoDefaultRoute,
}

/// The devices to attach to: each name as given, `auto` replaced by the
/// default-route devices; no name twice, in the order given.
pub fn resolve(requested: &[String]) -> Result<Vec<String>, DeviceError> {
    let mut devices: Vec<String> = Vec::new();
    for name in requested {
        let found = if name == AUTO {
            detect()?
        } else {
            vec![name.clone()]
        };
        for device in found {
            if !devices.contains(&device) {
                devices.push(device);
            }
        }
    }
    Ok(devices)
}

/// The devices of the IPv4 default routes, lowest metric first.
pub fn detect() -> Result<Vec<String>, DeviceError> {
    let table = fs::read_to_string(Path::new(ROUTES)).map_err(|source| DeviceError::Routes {
        path: ROUTES,
        source,
    })?;
    let devices = default_route_devices(&table);
    if devices.is_empty() {
        return Err(DeviceError::NoDefaultRoute);
    }
    Ok(devices)
}

/// The default routes' devices of a `/proc/net/route` table, lowest
/// metric first (see [`super::routes::RouteTable::default_devices`]).
fn default_route_devices(table: &str) -> Vec<String> {
    super::routes::RouteTable::parse(table).default_devices()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT";

    fn table(rows: &[&str]) -> String {
        std::iter::once(HEADER)
            .chain(rows.iter().copied())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_default_route_names_the_device() {
        let routes = table(&[
            "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0",
            "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0",
            "br0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0",
        ]);
        assert_eq!(default_route_devices(&routes), ["eth0"]);
    }

    #[test]
    fn several_default_routes_come_lowest_metric_first_once_each() {
        let routes = table(&[
            "ens6\t00000000\t0101A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0",
            "ens5\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0",
            "ens6\t00000000\t0201A8C0\t0003\t0\t0\t300\t00000000\t0\t0\t0",
        ]);
        assert_eq!(default_route_devices(&routes), ["ens5", "ens6"]);
    }

    #[test]
    fn routes_that_are_down_not_default_or_garbled_are_ignored() {
        let routes = table(&[
            "eth1\t00000000\t010200C0\t0002\t0\t0\t0\t00000000\t0\t0\t0", // not RTF_UP
            "eth2\t00000000\t010200C0\t0003\t0\t0\t0\t000000FF\t0\t0\t0", // a /8, not default
            "eth3\tzz\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0",
            "eth4\t00000000",
            "",
        ]);
        assert!(default_route_devices(&routes).is_empty());
    }

    #[test]
    fn named_devices_are_kept_in_order_without_duplicates() {
        let given = ["ext0".to_string(), "ext1".to_string(), "ext0".to_string()];
        assert_eq!(resolve(&given).unwrap(), ["ext0", "ext1"]);
    }
}
