//! Forwarding in XDP (`--xdp-forward`): a translated packet whose route
//! leaves by a device lb's XDP program runs on is sent there from XDP
//! (FIB lookup, then `XDP_TX` or a redirect) instead of walking the
//! kernel's IP forwarding path; anything else goes to the stack as before.
//!
//! Two kinds of device qualify as egress. Devices with lb's XDP attached
//! (`--device`, [`FORWARD_DEVICES`]): the operator chose them, and a driver
//! may accept redirected frames only where an XDP program runs (some
//! allocate their XDP transmit queues with it). And the devices the kernel
//! says take redirected frames now ([`XDP_TARGETS`], kept by the agent
//! from each device's `xdp_features`, `NETDEV_XDP_ACT_NDO_XMIT`): a routed
//! pod's veth whose pod end runs NAPI (GRO or an XDP program there), as
//! Calico and Cilium wire pods. Frames to a pod behind a bridge take the
//! stack: the FIB names the bridge, which takes no redirected frames.

/// An array indexed by ifindex: 1 for the devices lb's XDP runs on with
/// forwarding on, 0 elsewhere (all 0, no `--xdp-forward`: every packet
/// goes to the stack, uncounted). An array, not a hash: every translated
/// packet looks its device up, and an array lookup is a bounds check.
pub const FORWARD_DEVICES: &str = "lb_fwd_dev_v1";
/// Devices with an ifindex below this can forward in XDP (a node's
/// external devices are among its first; the agent warns of one past it).
pub const MAX_FORWARD_IFINDEX: u32 = 4096;

/// Ifindex -> 1 for the devices, other than [`FORWARD_DEVICES`], that take
/// frames redirected from XDP (their `xdp_features` include
/// `NETDEV_XDP_ACT_NDO_XMIT`). A hash: a node's pods come and go, and each
/// new veth gets a new ifindex, far past [`MAX_FORWARD_IFINDEX`] on a node
/// that has run for months.
pub const XDP_TARGETS: &str = "lb_xdp_targets_v1";
/// Devices [`XDP_TARGETS`] holds: many times a node's pods (kubelet's
/// `--max-pods` is 110 by default).
pub const MAX_XDP_TARGETS: u32 = 4096;

/// Per-CPU counters of what forwarding did, indexed by [`ForwardOutcome`].
pub const FORWARD_STATS: &str = "lb_fwd_stats_v1";

/// What became of a translated packet that arrived on a forwarding device.
/// Stable numbers: the pinned counters are indexed by them.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardOutcome {
    /// Sent back out of the device it came in by (`XDP_TX`).
    Transmitted = 0,
    /// Redirected to another forwarding device, or to a device that takes
    /// redirected frames ([`XDP_TARGETS`]: a routed pod's veth).
    Redirected = 1,
    /// The route's next hop has no neighbour entry yet: the stack resolves
    /// it (and the next packets are forwarded in XDP).
    StackNoNeighbour = 2,
    /// Larger than the route's MTU: the stack fragments it or answers
    /// "fragmentation needed".
    StackFragNeeded = 3,
    /// The route leaves by a device neither forwarding nor taking
    /// redirected frames (a pod's bridge, a veth whose pod end runs no
    /// NAPI, a device not given): the stack forwards it.
    StackOtherDevice = 4,
    /// The FIB forwards nothing here (a local address, blackhole,
    /// unreachable, forwarding off on the device): the stack decides.
    StackRoute = 5,
    /// The TTL would expire: the stack answers "time exceeded".
    StackTtl = 6,
}

pub const FORWARD_OUTCOME_COUNT: u32 = 7;

impl ForwardOutcome {
    pub const ALL: [ForwardOutcome; FORWARD_OUTCOME_COUNT as usize] = [
        ForwardOutcome::Transmitted,
        ForwardOutcome::Redirected,
        ForwardOutcome::StackNoNeighbour,
        ForwardOutcome::StackFragNeeded,
        ForwardOutcome::StackOtherDevice,
        ForwardOutcome::StackRoute,
        ForwardOutcome::StackTtl,
    ];

    /// The metric label and `lb stats` name.
    pub const fn name(self) -> &'static str {
        match self {
            ForwardOutcome::Transmitted => "xdp_tx",
            ForwardOutcome::Redirected => "xdp_redirect",
            ForwardOutcome::StackNoNeighbour => "stack_no_neighbour",
            ForwardOutcome::StackFragNeeded => "stack_frag_needed",
            ForwardOutcome::StackOtherDevice => "stack_other_device",
            ForwardOutcome::StackRoute => "stack_route",
            ForwardOutcome::StackTtl => "stack_ttl",
        }
    }

    /// Forwarded in XDP, without the stack.
    pub const fn in_xdp(self) -> bool {
        matches!(
            self,
            ForwardOutcome::Transmitted | ForwardOutcome::Redirected
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_numbered_in_order_and_named_apart() {
        for (index, outcome) in ForwardOutcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, index);
        }
        for a in ForwardOutcome::ALL {
            for b in ForwardOutcome::ALL {
                assert_eq!(a == b, a.name() == b.name());
            }
        }
    }
}
