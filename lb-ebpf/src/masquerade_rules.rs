//! kube-proxy's masquerade rules for ClusterIP traffic at XDP
//! (`lb_common::masquerade_rules`): a ClusterIP routed to the node from
//! outside is served like any frontend (kube-proxy's `services` chain
//! hangs off nat-prerouting and checks no interface), with
//! internalTrafficPolicy's endpoints (its internal-scope entry), and
//! masqueraded by `--masquerade-all` or when its source is outside
//! `--cluster-cidr`; and hairpin (the source is the endpoint chosen) is
//! masqueraded on every frontend.

use aya_ebpf::{macros::map, maps::Array};
use lb_common::{
    Endpoint4, FE_KIND_CLUSTER_IP, Frontend4Key, FrontendValue, SCOPE_EXTERNAL, SCOPE_INTERNAL,
    masquerade_rules::{
        ClusterIpRule, MASQ_RULE_DETECTOR, MasqueradeRules, TRACE_MASQ_HAIRPIN,
        TRACE_MASQ_POD_SHORT_CIRCUIT,
    },
    snat::masquerades,
};

use crate::{maps::FRONTENDS4, select, service_cidr, trace};

/// `--cluster-cidr` and `--masquerade-all`, slot 0 (all zero: neither).
#[map(name = "lb_masq_rules_v1")]
pub static MASQUERADE_RULES: Array<MasqueradeRules> = Array::pinned(1, 0);

const _: () = assert!(crate::maps::str_eq(
    "lb_masq_rules_v1",
    lb_common::masquerade_rules::MASQUERADE_RULES
));

/// The frontend a packet from `src_be` (network order) from outside
/// reaches: its external-scope entry (NodePort, LoadBalancer IP,
/// externalIP), else a ClusterIP's internal-scope entry
/// (internalTrafficPolicy's endpoints; the other internal-scope entries are
/// for pods and the node only). Under externalTrafficPolicy Local (an
/// external entry that does not masquerade) a source inside
/// `--cluster-cidr` (a pod of another node) is short-circuited to every
/// endpoint, unmasqueraded, as kube-proxy's external chain does ("short-
/// circuit pod traffic": `ip saddr <cluster-cidr> goto <cluster policy
/// chain>`): the internal-scope entry holds that set.
/// Only an allocated ClusterIP (`service_cidr::allocated`, which the miss
/// path asks anyway) is looked up in internal scope, so traffic to no
/// Service pays no lookup more; `Err` tells whether it is one.
#[inline(always)]
pub fn frontend_from_outside(
    dst: Endpoint4,
    proto: u8,
    src_be: u32,
) -> Result<FrontendValue, Allocated> {
    if let Some(fe) = select::frontend(dst, proto, SCOPE_EXTERNAL) {
        if masquerades(&fe) || !pod_source(src_be) {
            return Ok(fe);
        }
        let Some(cluster) = internal(dst, proto) else {
            return Ok(fe);
        };
        trace::step(TRACE_MASQ_POD_SHORT_CIRCUIT);
        return Ok(traced(cluster));
    }
    if !service_cidr::allocated(dst.addr_be) {
        return Err(Allocated(false));
    }
    internal(dst, proto)
        .filter(|fe| fe.kind() == FE_KIND_CLUSTER_IP)
        .map(traced)
        .ok_or(Allocated(true))
}

/// No frontend from outside; whether the destination is an allocated
/// ClusterIP.
pub struct Allocated(pub bool);

/// `fe`, recorded as the frontend found.
#[inline(always)]
fn traced(fe: FrontendValue) -> FrontendValue {
    trace::frontend(&fe);
    fe
}

/// Whether `--cluster-cidr` is given and holds `src_be` (kube-proxy's
/// `IfLocalNFT`).
#[inline(always)]
fn pod_source(src_be: u32) -> bool {
    MASQUERADE_RULES
        .get(0)
        .is_some_and(|rules| rules.flags & MASQ_RULE_DETECTOR != 0 && rules.in_cluster_cidr(src_be))
}

/// The internal-scope entry of `dst`.
#[inline(always)]
fn internal(dst: Endpoint4, proto: u8) -> Option<FrontendValue> {
    let key = Frontend4Key {
        addr_be: dst.addr_be,
        port_be: dst.port_be,
        proto,
        scope: SCOPE_INTERNAL,
    };
    // SAFETY: copied out at once (as `select::frontend`).
    unsafe { FRONTENDS4.get(&key).copied() }
}

/// Whether kube-proxy masquerades a new connection from `src_be` through
/// `fe` to `backend_be` (addresses in network order): the frontend's own
/// decision (`FE_FLAG_MASQUERADE`: external scope, policy Cluster), a
/// ClusterIP's rules, or hairpin.
#[inline(always)]
pub fn masquerades_from_outside(fe: &FrontendValue, src_be: u32, backend_be: u32) -> bool {
    let decided = if fe.kind() == FE_KIND_CLUSTER_IP {
        let rule = cluster_ip_rule(src_be);
        trace::step(rule.trace_bit());
        rule.masquerades()
    } else {
        masquerades(fe)
    };
    if decided {
        return true;
    }
    let hairpin = src_be == backend_be;
    if hairpin {
        trace::step(TRACE_MASQ_HAIRPIN);
    }
    hairpin
}

/// The rule that decides a connection from `src_be` to a ClusterIP.
#[inline(always)]
pub fn cluster_ip_rule(src_be: u32) -> ClusterIpRule {
    MASQUERADE_RULES
        .get(0)
        .copied()
        .unwrap_or_default()
        .cluster_ip(src_be)
}

/// `lb trace` of the socket hooks: the rule kube-proxy would apply to a
/// connection from `src_be` (a ClusterIP's; `lb trace` reads it only for
/// one), and hairpin. Nothing is masqueraded on this path: the connection
/// starts on this node and the kernel picks its source.
#[inline(always)]
pub fn trace_socket(src_be: u32, backend_be: u32) {
    trace::step(cluster_ip_rule(src_be).trace_bit());
    if src_be == backend_be {
        trace::step(TRACE_MASQ_HAIRPIN);
    }
}
