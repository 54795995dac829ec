//! The service-CIDR maps' writes of a plan (`--service-cidr`, kube-proxy's
//! nftables `cluster-ips-check` chain, see `lb_common::service_cidr`):
//!
//! - the allocated ClusterIPs: every address some ClusterIP frontend
//!   holds once the plan's frontends are written (kube-proxy's
//!   `cluster-ips` set), so the datapath rejects that address's other
//!   ports and protocols. A new address is added after the frontend flips
//!   and a gone one removed after its frontends are (until then its ports
//!   are refused rather than dropped: both turn the connection away);
//! - the service CIDRs the agent was started with, whose other addresses
//!   the datapath drops.
//!
//! A whole plan looks at every frontend; a scoped one only at the
//! addresses of the frontends it sets or removes (the others keep what
//! they had).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use lb_common::{FE_KIND_CLUSTER_IP, Frontend4Key, FrontendValue};

use super::{Applied, Plan};
use crate::model::SourceRange;

/// Fills the plan's ClusterIP writes from its frontend writes: `whole`
/// checks every address the maps or the plan know, else only those the
/// plan's frontends touch.
pub(super) fn plan_cluster_ips(applied: &Applied, plan: &mut Plan, whole: bool) {
    let set: BTreeMap<&Frontend4Key, &FrontendValue> =
        plan.set_frontends.iter().map(|(k, v)| (k, v)).collect();
    let removed: BTreeSet<&Frontend4Key> = plan.remove_frontends.iter().collect();
    let mut addresses: BTreeSet<u32> = set
        .keys()
        .chain(removed.iter())
        .map(|k| k.addr_be)
        .collect();
    if whole {
        addresses.extend(applied.frontends.keys().map(|k| k.addr_be));
        addresses.extend(
            applied
                .cluster_ips
                .iter()
                .map(|a| u32::from_ne_bytes(a.octets())),
        );
    }
    for addr_be in addresses {
        let addr = Ipv4Addr::from(addr_be.to_ne_bytes());
        let kept = applied
            .frontends
            .range(first_key(addr_be)..=last_key(addr_be))
            .filter(|(k, _)| !removed.contains(k) && !set.contains_key(k))
            .map(|(_, v)| v);
        // A range per address, not a scan of every planned frontend: a
        // whole plan at 10,000 Services has tens of thousands of each.
        let (first, last) = (first_key(addr_be), last_key(addr_be));
        let planned = set
            .range::<&Frontend4Key, _>(&first..=&last)
            .map(|(_, v)| *v);
        let allocated = kept.chain(planned).any(|v| v.kind() == FE_KIND_CLUSTER_IP);
        let held = applied.cluster_ips.contains(&addr);
        if allocated && !held {
            plan.set_cluster_ips.push(addr);
        } else if !allocated && held {
            plan.remove_cluster_ips.push(addr);
        }
    }
}

/// Fills the plan's service-CIDR writes: the trie holds exactly `wanted`.
pub fn plan_service_cidrs(wanted: &BTreeSet<SourceRange>, applied: &Applied, plan: &mut Plan) {
    plan.set_service_cidrs = wanted.difference(&applied.service_cidrs).copied().collect();
    plan.remove_service_cidrs = applied.service_cidrs.difference(wanted).copied().collect();
}

fn first_key(addr_be: u32) -> Frontend4Key {
    Frontend4Key {
        addr_be,
        port_be: 0,
        proto: 0,
        scope: 0,
    }
}

fn last_key(addr_be: u32) -> Frontend4Key {
    Frontend4Key {
        addr_be,
        port_be: u16::MAX,
        proto: u8::MAX,
        scope: u8::MAX,
    }
}

#[cfg(test)]
mod tests;
