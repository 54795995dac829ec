//! Forwarding in XDP (`--xdp-forward`, `lb_common::forward`): the devices
//! it may send by, and what it did.

use std::collections::BTreeSet;

use lb_common::forward::{FORWARD_DEVICES, FORWARD_STATS, ForwardOutcome};

use super::{KernelMaps, MapsError, ignore_missing, insert_err, map_err};

impl KernelMaps {
    /// Makes `ifindexes` the devices whose translated packets are forwarded
    /// in XDP (and which it may send by); empty: none, every packet takes
    /// the stack. Devices no longer listed are removed after the new ones
    /// are in, so a device staying on never misses a packet.
    pub fn set_forward_devices(&mut self, ifindexes: &BTreeSet<u32>) -> Result<(), MapsError> {
        let capacity = lb_common::forward::MAX_FORWARD_DEVICES;
        for &ifindex in ifindexes {
            self.forward_devices
                .insert(&ifindex, &1, 0)
                .map_err(insert_err(FORWARD_DEVICES, capacity))?;
        }
        for ifindex in self.forward_devices()? {
            if !ifindexes.contains(&ifindex) {
                ignore_missing(self.forward_devices.remove(&ifindex))
                    .map_err(map_err(FORWARD_DEVICES, "delete"))?;
            }
        }
        Ok(())
    }

    /// The devices forwarding in XDP runs on, by ifindex.
    pub fn forward_devices(&self) -> Result<BTreeSet<u32>, MapsError> {
        self.forward_devices
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(FORWARD_DEVICES, "iterate"))
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
