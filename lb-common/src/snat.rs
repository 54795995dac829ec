//! Masquerade (SNAT): which traffic kube-proxy masquerades, and the contract
//! the datapath needs to do the same.
//!
//! kube-proxy decides once per connection, in its nat hooks (nftables
//! `external-…` chains, iptables `KUBE-EXT-…`), and conntrack applies the
//! decision to the connection's later packets. For traffic that arrives
//! from outside the node (what XDP sees) to a NodePort, a LoadBalancer IP
//! or an externalIP, the rule is (pkg/proxy/nftables/proxier.go,
//! `syncProxyRules`):
//!
//! ```text
//! if !svcInfo.ExternalPolicyLocal() {
//!     // If we are using non-local endpoints we need to masquerade, in case we cross nodes.
//!     … "jump", markMasqChain
//! }
//! ```
//!
//! so under `externalTrafficPolicy: Cluster` every such connection is
//! masqueraded to the node's address, whether the endpoint chosen is local
//! or remote, and under `Local` none is (external clients keep their
//! address: the rules that masquerade under Local match only pod and node
//! sources, which never reach XDP from this node). `--masquerade-all`
//! changes only ClusterIP chains (its rule matches `ip daddr <ClusterIP>`),
//! never these; the ClusterIP rules are `crate::masquerade_rules`'. Hairpin (the source is the chosen endpoint) needs no rule
//! of its own here: an external-path source on another node can only be
//! chosen under policy Cluster, which masquerades anyway.
//!
//! The decision travels in the frontend value (`FE_FLAG_MASQUERADE`, set
//! by the agent for external-scope frontends of policy Cluster), and the
//! address to masquerade to in `SNAT_ADDR` (the node's primary IPv4).

use crate::{FE_KIND_EXTERNAL_IP, FE_KIND_LOAD_BALANCER, FE_KIND_NODE_PORT, FrontendValue};

/// New connections to this frontend are masqueraded to the node's address
/// (external scope, `externalTrafficPolicy: Cluster`). Bit 2 of
/// `FrontendValue.flags` (bit 0: empty drop, bit 1: source ranges).
pub const FE_FLAG_MASQUERADE: u32 = 1 << 2;

/// The address masquerade rewrites sources to: an array of one `u32`, the
/// node's primary IPv4 in network order (0: none known, nothing is
/// masqueraded). Written by the agent from the node's addresses.
pub const SNAT_ADDR: &str = "lb_snat_addr_v1";

/// Whether backends on this node are masqueraded too: an array of one
/// `u32`, 1 once the agent attached the hook that translates their pods'
/// replies back (`lb_tc_pod_ingress` on `--pod-device`); 0: a local
/// backend keeps the client's address (`snat_skipped_local_backend`).
pub const SNAT_LOCAL: &str = "lb_snat_local_v1";

/// The source ports masquerade allocates from: 61000 to 65535. Disjoint
/// from the default NodePort range (30000-32767: a reply to a masqueraded
/// flow must never look like a new connection to a NodePort) and from the
/// kernel's default ephemeral range (`net.ipv4.ip_local_port_range`,
/// 32768-60999: a node process's own connection to a backend must never
/// share a port with a masqueraded flow toward the same backend). A port is
/// taken per (backend address, backend port, protocol), as the kernel's
/// `nf_nat_used_tuple` counts it, so each backend can hold 4,536
/// masqueraded connections from this node at once.
pub const SNAT_PORT_MIN: u16 = 61_000;
pub const SNAT_PORT_MAX: u16 = 65_535;

/// The default NodePort range's end (`--service-node-port-range`) and the
/// kernel's default ephemeral range's end: the SNAT ports start above both.
const NODE_PORT_RANGE_END: u16 = 32_767;
const EPHEMERAL_RANGE_END: u16 = 60_999;
const _: () = assert!(SNAT_PORT_MIN > NODE_PORT_RANGE_END && SNAT_PORT_MIN > EPHEMERAL_RANGE_END);
const _: () = assert!(SNAT_PORT_MAX as u32 - SNAT_PORT_MIN as u32 + 1 == 4_536);

/// Ports in the SNAT range.
pub const SNAT_PORT_COUNT: u32 = SNAT_PORT_MAX as u32 - SNAT_PORT_MIN as u32 + 1;

/// How many ports a new masqueraded flow tries, each drawn at random in
/// the range, before its drop counts as exhaustion. A port is claimed by
/// inserting the flow's reply key (backend -> node address and port) only
/// where none exists, so a try fails only where another flow holds that
/// very tuple; with 32 random tries a backend whose ports are 90% taken
/// still gets a new flow through 97% of the time (Cilium tries 32 without
/// its large instruction budget; the kernel's `nf_nat_l4proto_unique_tuple`
/// 128, then fewer).
pub const SNAT_PORT_TRIES: u32 = 32;

/// The port a try with `random` gets, in network order.
#[inline(always)]
pub const fn snat_port_be(random: u32) -> u16 {
    (SNAT_PORT_MIN + (random % SNAT_PORT_COUNT) as u16).to_be()
}

/// `TraceRecord.steps` bit: kube-proxy masquerades this new connection, to
/// `TraceRecord.snat_addr_be` (bits 5 and 6 are affinity's).
pub const TRACE_MASQUERADE: u32 = 1 << 7;
/// `TraceRecord.steps` bit: the datapath masquerades it, to
/// `snat_addr_be`:`snat_port_be` (the first free port it tried).
pub const TRACE_SNAT_APPLIED: u32 = 1 << 8;
/// `TraceRecord.steps` bit: the backend is on this node; its replies have
/// no hook to translate them back yet, so the source is kept.
pub const TRACE_SNAT_LOCAL_BACKEND: u32 = 1 << 9;
/// `TraceRecord.steps` bit: every port tried is taken (a drop).
pub const TRACE_SNAT_EXHAUSTED: u32 = 1 << 10;

/// Where a connection enters this node's datapath.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// From outside the node, on an external device (XDP).
    FromOutside,
    /// From a process of this node or one of its pods (the socket hooks).
    FromThisNode,
}

/// What happens to a connection's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Masquerade {
    /// Rewritten to the node's address and an allocated port.
    ToNodeAddress,
    /// Kept: the backend sees the client's own address.
    ClientKept,
    /// The socket hooks translate at `connect()`: the kernel chooses the
    /// source by its route to the backend, nothing to masquerade.
    NotNeeded,
    /// A ClusterIP reached from outside: decided per connection by its
    /// source, `--cluster-cidr` and `--masquerade-all`
    /// ([`crate::masquerade_rules`]).
    ByClusterIpRules,
}

impl Masquerade {
    /// The rule that decided, as `lb trace` names it.
    pub const fn rule(self) -> &'static str {
        match self {
            Masquerade::ToNodeAddress => "external traffic, policy Cluster: masquerade",
            Masquerade::ClientKept => "external traffic, policy Local: client address kept",
            Masquerade::NotNeeded => {
                "socket path: connections start on this node, the kernel picks the source (no masquerade)"
            }
            Masquerade::ByClusterIpRules => {
                "ClusterIP from outside: decided per connection by --cluster-cidr and --masquerade-all"
            }
        }
    }
}

/// kube-proxy's decision for a connection arriving `arrival` at a frontend
/// of kind `kind` (`FE_KIND_*`) of a Service whose externalTrafficPolicy
/// is Local (`external_policy_local`) or Cluster.
pub const fn decide(arrival: Arrival, kind: u32, external_policy_local: bool) -> Masquerade {
    match arrival {
        Arrival::FromThisNode => Masquerade::NotNeeded,
        Arrival::FromOutside => match kind {
            FE_KIND_NODE_PORT | FE_KIND_LOAD_BALANCER | FE_KIND_EXTERNAL_IP => {
                if external_policy_local {
                    Masquerade::ClientKept
                } else {
                    Masquerade::ToNodeAddress
                }
            }
            _ => Masquerade::ByClusterIpRules,
        },
    }
}

/// Whether new connections to `fe` are masqueraded (what the datapath
/// reads).
#[inline(always)]
pub const fn masquerades(fe: &FrontendValue) -> bool {
    fe.flags & FE_FLAG_MASQUERADE != 0
}

#[cfg(test)]
mod tests;
