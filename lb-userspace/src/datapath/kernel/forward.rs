//! Forwarding in XDP (`--xdp-forward`, `lb_common::forward`): the devices
//! it may send by, and what it did.

use std::collections::BTreeSet;

use lb_common::forward::{
    FORWARD_DEVICES, FORWARD_STATS, ForwardOutcome, MAX_FORWARD_IFINDEX, MAX_XDP_TARGETS,
    XDP_TARGETS,
};

use super::{KernelMaps, MapsError, map_err};

impl KernelMaps {
    /// Makes `ifindexes` the devices whose translated packets are forwarded
    /// in XDP (and which it may send by); empty: none, every packet takes
    /// the stack. Devices no longer listed are turned off after the new ones
    /// are on, so a device staying on never misses a packet. An ifindex
    /// past [`MAX_FORWARD_IFINDEX`] is refused.
    pub fn set_forward_devices(&mut self, ifindexes: &BTreeSet<u32>) -> Result<(), MapsError> {
        if let Some(&past) = ifindexes.iter().find(|&&i| i >= MAX_FORWARD_IFINDEX) {
            return Err(MapsError::Invalid(format!(
                "ifindex {past} is past the {MAX_FORWARD_IFINDEX} devices forwarding in XDP \
                 can name: leave --xdp-forward off on this node"
            )));
        }
        for &ifindex in ifindexes {
            self.forward_devices
                .set(ifindex, &1, 0)
                .map_err(map_err(FORWARD_DEVICES, "update"))?;
        }
        for ifindex in self.forward_devices()? {
            if !ifindexes.contains(&ifindex) {
                self.forward_devices
                    .set(ifindex, &0, 0)
                    .map_err(map_err(FORWARD_DEVICES, "update"))?;
            }
        }
        Ok(())
    }

    /// The devices forwarding in XDP runs on, by ifindex.
    pub fn forward_devices(&self) -> Result<BTreeSet<u32>, MapsError> {
        let mut on = BTreeSet::new();
        for (ifindex, value) in self.forward_devices.iter().enumerate() {
            if value.map_err(map_err(FORWARD_DEVICES, "lookup"))? == 1 {
                on.insert(ifindex as u32);
            }
        }
        Ok(on)
    }

    /// Makes `ifindexes` the devices other than the forwarding ones that
    /// forwarding in XDP may redirect to (devices taking redirected frames:
    /// `lb_common::forward::XDP_TARGETS`). New ones are added before gone
    /// ones are removed. More than [`MAX_XDP_TARGETS`] is refused whole.
    pub fn set_xdp_targets(&mut self, ifindexes: &BTreeSet<u32>) -> Result<(), MapsError> {
        if ifindexes.len() > MAX_XDP_TARGETS as usize {
            return Err(MapsError::Full {
                map: XDP_TARGETS,
                capacity: MAX_XDP_TARGETS,
            });
        }
        let held = self.xdp_targets()?;
        for &ifindex in ifindexes.difference(&held) {
            self.xdp_targets
                .insert(&ifindex, &1, 0)
                .map_err(map_err(XDP_TARGETS, "update"))?;
        }
        for ifindex in held.difference(ifindexes) {
            self.xdp_targets
                .remove(ifindex)
                .map_err(map_err(XDP_TARGETS, "delete"))?;
        }
        Ok(())
    }

    /// The devices forwarding in XDP may redirect to besides the
    /// forwarding ones, by ifindex.
    pub fn xdp_targets(&self) -> Result<BTreeSet<u32>, MapsError> {
        self.xdp_targets
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(XDP_TARGETS, "lookup"))
    }

    /// Each outcome's packets, summed over CPUs.
    pub fn forward_stats(&self) -> Result<Vec<(ForwardOutcome, u64)>, MapsError> {
        ForwardOutcome::ALL
            .iter()
            .map(|&outcome| {
                let values = self
                    .forward_stats
                    .get(&(outcome as u32), 0)
                    .map_err(map_err(FORWARD_STATS, "lookup"))?;
                Ok((outcome, values.iter().copied().fold(0, u64::wrapping_add)))
            })
            .collect()
    }
}
