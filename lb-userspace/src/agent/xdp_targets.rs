//! `--xdp-forward` to pods: keeps `lb_xdp_targets_v1` (the devices besides
//! `--device` that forwarding in XDP may redirect to) equal to the devices
//! whose `xdp_features` say they take redirected frames now. A routed
//! pod's veth qualifies once its pod end runs NAPI (GRO on there, or an XDP
//! program), as the kernel reports it; a bridge never does, so pods behind
//! one keep taking the stack.
//!
//! The kernel announces every change of a device's features (the `netdev`
//! family's `mgmt` group); each wakes a re-read, and a re-read also runs
//! every [`REREAD`] in case a notification was lost. A device that stops
//! taking redirected frames between its change and the re-read loses the
//! frames redirected to it meanwhile: a notification is read within
//! microseconds of the change. While the agent is stopped the map stays as
//! it was, so a pod end turned from NAPI to none then is not seen until
//! the agent is back (a pod's new veth is: it is not in the map).

use std::{collections::BTreeSet, io, time::Duration};

use tracing::{info, warn};

use super::xdp_features::{DeviceXdp, Netdev};
use crate::datapath::KernelMaps;

/// How often the devices are re-read without a notification.
const REREAD: Duration = Duration::from_secs(10);

/// The redirect targets among `devices`: those taking redirected frames,
/// except the forwarding devices (`lb_fwd_dev_v1` already names them).
pub fn targets(devices: &[DeviceXdp], forwarding: &BTreeSet<u32>) -> BTreeSet<u32> {
    devices
        .iter()
        .filter(|device| device.takes_redirects() && !forwarding.contains(&device.ifindex))
        .map(|device| device.ifindex)
        .collect()
}

/// Writes the targets once, then keeps them in a thread of their own. A
/// kernel without the `netdev` family (before 6.3) reports no features:
/// then no device is a target, which is said once.
pub fn spawn(mut maps: KernelMaps, forwarding: BTreeSet<u32>) -> io::Result<()> {
    let mut netdev = match Netdev::open() {
        Ok(netdev) => netdev,
        Err(err) => {
            warn!(
                error = %err,
                "forwarding in XDP reaches pods by the stack only: this kernel does not report \
                 devices' XDP features (the netdev netlink family, Linux 6.3+)"
            );
            return Ok(());
        }
    };
    let mut changes = netdev.changes()?;
    let mut written = None;
    refresh(&mut netdev, &mut maps, &forwarding, &mut written);
    std::thread::Builder::new()
        .name("xdp-targets".into())
        .spawn(move || {
            loop {
                if let Err(err) = changes.wait(REREAD) {
                    warn!(error = %err, "waiting for devices' XDP feature changes");
                    std::thread::sleep(REREAD);
                }
                refresh(&mut netdev, &mut maps, &forwarding, &mut written);
            }
        })
        .map(drop)
}

fn refresh(
    netdev: &mut Netdev,
    maps: &mut KernelMaps,
    forwarding: &BTreeSet<u32>,
    written: &mut Option<BTreeSet<u32>>,
) {
    let devices = match netdev.devices() {
        Ok(devices) => devices,
        Err(err) => {
            warn!(error = %err, "reading devices' XDP features; the redirect targets stay as they were");
            return;
        }
    };
    let now = targets(&devices, forwarding);
    if written.as_ref() == Some(&now) {
        return;
    }
    match maps.set_xdp_targets(&now) {
        Ok(()) => {
            info!(ifindexes = ?now, "devices taking frames redirected from XDP (pods reached without the stack)");
            *written = Some(now);
        }
        Err(err) => warn!(error = %err, "writing the devices that take redirected frames"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::xdp_features::NETDEV_XDP_ACT_NDO_XMIT;

    fn device(ifindex: u32, features: u64) -> DeviceXdp {
        DeviceXdp { ifindex, features }
    }

    #[test]
    fn only_devices_taking_redirects_and_not_forwarding_already_are_targets() {
        let devices = [
            // lo: no XDP at all
            device(1, 0),
            // ext0, a --device: already in lb_fwd_dev_v1
            device(2, 1 | 2 | NETDEV_XDP_ACT_NDO_XMIT),
            // a pod's veth whose pod end runs GRO
            device(7, 1 | 2 | NETDEV_XDP_ACT_NDO_XMIT | 32 | 64),
            // a pod's veth whose pod end runs no NAPI
            device(8, 1 | 2 | 32),
            // a bridge
            device(9, 0),
        ];
        assert_eq!(targets(&devices, &[2].into()), [7].into());
        assert_eq!(targets(&devices, &BTreeSet::new()), [2, 7].into());
        assert!(targets(&[], &[2].into()).is_empty());
    }
}
