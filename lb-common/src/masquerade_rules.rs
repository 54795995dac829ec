//! kube-proxy's masquerade rules for ClusterIP traffic: the local-traffic
//! detector (`--cluster-cidr` with detect-local-mode ClusterCIDR) and
//! `--masquerade-all`, as the agent writes them for the datapath.
//!
//! The rule (pkg/proxy/nftables/proxier.go, `syncProxyRules`, the
//! internal traffic chain of each Service port):
//!
//! ```text
//! if proxier.masqueradeAll {
//!     … ipX, "daddr", svcInfo.ClusterIP(), protocol, "dport", svcInfo.Port(), "jump", markMasqChain
//! } else if proxier.localDetector.IsImplemented() {
//!     // This masquerades off-cluster traffic to a service VIP. …
//!     … ipX, "daddr", svcInfo.ClusterIP(), …, proxier.localDetector.IfNotLocalNFT(), "jump", markMasqChain
//! }
//! ```
//!
//! (iptables' proxier the same: `-d <ClusterIP> --dport <port>` with
//! `! -s <cluster-cidr>`, or without it under `--masquerade-all`). Both
//! match `daddr <ClusterIP>`: neither touches NodePorts, LoadBalancer IPs
//! or externalIPs (TestInternalExternalMasquerade's "masqueradeAll" case
//! overrides only the "to ClusterIP" rows). Without `--cluster-cidr`
//! kube-proxy's detector is the no-op one (server_linux.go
//! `getLocalDetectors` only logs "Detect-local-mode set to ClusterCIDR, but
//! no cluster CIDR specified for primary IP family"), and nothing reaching
//! a ClusterIP is masqueraded ("With no LocalTrafficDetector, all traffic
//! to a ClusterIP is assumed to be from a pod"). kube-proxy takes one CIDR
//! per family (`NewDetectLocalByCIDR(cidrs[0])`), so the contract holds
//! one IPv4 CIDR.
//!
//! Hairpin (pkg/proxy/nftables/proxier.go, each endpoint chain: "Handle
//! traffic that loops back to the originator with SNAT", `ip saddr <ep>
//! jump mark-for-masquerade`): a connection whose source is the endpoint
//! chosen is masqueraded whatever the frontend.

use bytemuck::{Pod, Zeroable};

/// The rules: an array of one [`MasqueradeRules`], written by the agent at
/// start (all zero: no detector, no masquerade-all).
pub const MASQUERADE_RULES: &str = "lb_masq_rules_v1";

/// [`MasqueradeRules::flags`]: `--cluster-cidr` is given (the detector is
/// implemented).
pub const MASQ_RULE_DETECTOR: u32 = 1 << 0;
/// [`MasqueradeRules::flags`]: `--masquerade-all`.
pub const MASQ_RULE_ALL: u32 = 1 << 1;

/// `TraceRecord.steps` bit: the ClusterIP connection is masqueraded by
/// `--masquerade-all`.
pub const TRACE_MASQ_ALL: u32 = 1 << 24;
/// `TraceRecord.steps` bit: the ClusterIP connection's source is outside
/// `--cluster-cidr` (masqueraded, "off-cluster traffic to a service VIP").
pub const TRACE_MASQ_OFF_CLUSTER: u32 = 1 << 25;
/// `TraceRecord.steps` bit: the ClusterIP connection's source is inside
/// `--cluster-cidr` (pod traffic: the source is kept).
pub const TRACE_MASQ_IN_CLUSTER: u32 = 1 << 26;
/// `TraceRecord.steps` bit: the source is the endpoint chosen (hairpin:
/// masqueraded).
pub const TRACE_MASQ_HAIRPIN: u32 = 1 << 27;
/// `TraceRecord.steps` bit: a source inside `--cluster-cidr` reached an
/// external frontend of policy Local from outside (a pod of another node):
/// short-circuited to every endpoint (the internal-scope entry), its
/// source kept.
pub const TRACE_MASQ_POD_SHORT_CIRCUIT: u32 = 1 << 28;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct MasqueradeRules {
    /// `MASQ_RULE_*` bits.
    pub flags: u32,
    /// `--cluster-cidr`'s IPv4 network and mask, network order (valid with
    /// `MASQ_RULE_DETECTOR`).
    pub cluster_cidr_be: u32,
    pub cluster_mask_be: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<MasqueradeRules>() == 16);

// SAFETY: repr(C), bytemuck Pod (no padding, any bit pattern valid): what
// aya::Pod requires.
#[cfg(feature = "user")]
unsafe impl aya::Pod for MasqueradeRules {}

/// Which rule decides a connection to a ClusterIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterIpRule {
    /// `--masquerade-all`: masqueraded.
    MasqueradeAll,
    /// The source is outside `--cluster-cidr`: masqueraded.
    OffCluster,
    /// The source is inside `--cluster-cidr` (a pod): kept.
    InCluster,
    /// No `--cluster-cidr`: assumed a pod, kept.
    NoDetector,
}

impl ClusterIpRule {
    /// Whether the rule masquerades.
    pub const fn masquerades(self) -> bool {
        matches!(
            self,
            ClusterIpRule::MasqueradeAll | ClusterIpRule::OffCluster
        )
    }

    /// Its `TraceRecord.steps` bit (none for `NoDetector`).
    pub const fn trace_bit(self) -> u32 {
        match self {
            ClusterIpRule::MasqueradeAll => TRACE_MASQ_ALL,
            ClusterIpRule::OffCluster => TRACE_MASQ_OFF_CLUSTER,
            ClusterIpRule::InCluster => TRACE_MASQ_IN_CLUSTER,
            ClusterIpRule::NoDetector => 0,
        }
    }

    /// The rule a trace recorded in `steps`.
    pub const fn from_trace(steps: u32) -> ClusterIpRule {
        if steps & TRACE_MASQ_ALL != 0 {
            ClusterIpRule::MasqueradeAll
        } else if steps & TRACE_MASQ_OFF_CLUSTER != 0 {
            ClusterIpRule::OffCluster
        } else if steps & TRACE_MASQ_IN_CLUSTER != 0 {
            ClusterIpRule::InCluster
        } else {
            ClusterIpRule::NoDetector
        }
    }

    /// The rule, as `lb trace` names it.
    pub const fn text(self) -> &'static str {
        match self {
            ClusterIpRule::MasqueradeAll => "ClusterIP, --masquerade-all: masquerade",
            ClusterIpRule::OffCluster => {
                "ClusterIP, source outside --cluster-cidr (off-cluster traffic to a service VIP): masquerade"
            }
            ClusterIpRule::InCluster => {
                "ClusterIP, source inside --cluster-cidr (pod traffic): source kept"
            }
            ClusterIpRule::NoDetector => {
                "ClusterIP, no --cluster-cidr (all traffic to a ClusterIP is assumed to be from a pod): source kept"
            }
        }
    }
}

impl MasqueradeRules {
    /// The rules for `--cluster-cidr` (network and prefix length, the
    /// network in host order) and `--masquerade-all`.
    pub const fn new(cluster_cidr: Option<(u32, u8)>, masquerade_all: bool) -> MasqueradeRules {
        let mut rules = MasqueradeRules {
            flags: 0,
            cluster_cidr_be: 0,
            cluster_mask_be: 0,
            _pad: 0,
        };
        if let Some((network, prefix_len)) = cluster_cidr {
            let mask = match prefix_len {
                0 => 0,
                1..=32 => u32::MAX << (32 - prefix_len as u32),
                _ => u32::MAX,
            };
            rules.flags |= MASQ_RULE_DETECTOR;
            rules.cluster_cidr_be = (network & mask).to_be();
            rules.cluster_mask_be = mask.to_be();
        }
        if masquerade_all {
            rules.flags |= MASQ_RULE_ALL;
        }
        rules
    }

    /// Whether `addr_be` (network order) is inside `--cluster-cidr`.
    #[inline(always)]
    pub const fn in_cluster_cidr(&self, addr_be: u32) -> bool {
        addr_be & self.cluster_mask_be == self.cluster_cidr_be
    }

    /// The rule that decides a connection from `src_be` to a ClusterIP.
    #[inline(always)]
    pub const fn cluster_ip(&self, src_be: u32) -> ClusterIpRule {
        if self.flags & MASQ_RULE_ALL != 0 {
            ClusterIpRule::MasqueradeAll
        } else if self.flags & MASQ_RULE_DETECTOR == 0 {
            ClusterIpRule::NoDetector
        } else if self.in_cluster_cidr(src_be) {
            ClusterIpRule::InCluster
        } else {
            ClusterIpRule::OffCluster
        }
    }
}

#[cfg(test)]
mod tests;
