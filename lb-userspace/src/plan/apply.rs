//! Applying a plan: its writes in the order that keeps every packet on a
//! whole state (see the module comment of `plan`).

use std::collections::HashSet;

use lb_common::Backend4;

use super::{Applied, Plan, TableWrite};
use crate::datapath::{DatapathMaps, MapsError, PurgeScope};

#[cfg(test)]
pub(crate) use crate::datapath::TABLES_PER_WRITE;

/// Applies a plan in order, then records it in `applied`. On error the maps
/// hold a consistent prefix of the plan (every step leaves them valid), and
/// `applied` is re-read by the caller before the next attempt.
pub fn apply(
    plan: &Plan,
    maps: &mut dyn DatapathMaps,
    applied: &mut Applied,
) -> Result<(), MapsError> {
    apply_selection(plan, maps)?;
    apply_cleanup(plan, maps, applied)
}

/// The plan's writes up to the one that makes its selection effective
/// (backends, tables, frontends, and what frontends and their removal
/// leave unused of addresses and ranges): from then on every new flow
/// selects as the plan says. kube-proxy observes its programming latency
/// at the same point, after its rules are restored and before its
/// conntrack cleanup (pkg/proxy/iptables/proxier.go `syncProxyRules`).
/// [`apply_cleanup`] must follow.
pub fn apply_selection(plan: &Plan, maps: &mut dyn DatapathMaps) -> Result<(), MapsError> {
    maps.set_services(&plan.set_services)?;
    maps.set_backends(&plan.set_backends)?;
    write_tables(&plan.write_tables, maps)?;
    for (id, range) in &plan.set_source_ranges {
        maps.set_source_range(*id, range)?;
    }
    maps.set_frontends(&plan.set_frontends)?;
    for key in &plan.remove_frontends {
        maps.remove_frontend(key)?;
    }
    for (id, range) in &plan.remove_source_ranges {
        maps.remove_source_range(*id, range)?;
    }
    for addr in &plan.set_cluster_ips {
        maps.set_cluster_ip(*addr)?;
    }
    for addr in &plan.remove_cluster_ips {
        maps.remove_cluster_ip(*addr)?;
    }
    for cidr in &plan.set_service_cidrs {
        maps.set_service_cidr(cidr)?;
    }
    for cidr in &plan.remove_service_cidrs {
        maps.remove_service_cidr(cidr)?;
    }
    Ok(())
}

/// The rest of the plan once [`apply_selection`] returned: the purges and
/// removals of what nothing selects any more, the tables' release, then
/// the record in `applied`.
pub fn apply_cleanup(
    plan: &Plan,
    maps: &mut dyn DatapathMaps,
    applied: &mut Applied,
) -> Result<(), MapsError> {
    // selection: a packet that read a table's slot before its rewrite in
    // place may still be choosing a backend this plan purges or removes:
    // the kernel's maps wait until every CPU was seen with no program
    // between its first read and its connection entry (per-CPU counts, a
    // few microseconds), or for an RCU grace period when they cannot tell.
    let outlived = !plan.purge_connections.is_empty()
        || !plan.purge_affinity.is_empty()
        || !plan.remove_backends.is_empty();
    if outlived {
        maps.wait_for_table_readers()?;
    }
    // Purged before the backends go (an apply interrupted before it is
    // purged again: `Planner::not_applied`).
    let (leaving, staying) = by_backend_leaving(plan);
    if !staying.is_empty() {
        maps.purge_service_connections(&staying, PurgeScope::Everything)?;
    }
    if !leaving.is_empty() {
        maps.purge_service_connections(&leaving, PurgeScope::SocketsOnly)?;
    }
    if !plan.purge_affinity.is_empty() {
        maps.purge_affinity(&plan.purge_affinity)?;
    }
    for (id, _) in &plan.remove_backends {
        maps.remove_backend(*id)?;
    }
    for id in &plan.remove_services {
        maps.remove_service(*id)?;
    }
    // selection: the tables whose quarantine ends with this plan, unless
    // it wrote them again, give their memory back.
    for id in super::algorithm::tables_to_release(plan, applied) {
        maps.release_table(id)?;
    }
    applied.record(plan);
    Ok(())
}

/// (service id, backend): one Service port's UDP flows to purge.
type UdpPurge = (u32, Backend4);

/// The plan's UDP purges split by whether the backend leaves the backends
/// map in this plan (the datapath's recheck then moves the flows itself:
/// `PurgeScope::SocketsOnly`) or stays in it. A backend is its address,
/// port and protocol: a purge names it without its flags.
fn by_backend_leaving(plan: &Plan) -> (Vec<UdpPurge>, Vec<UdpPurge>) {
    let endpoint = |b: &Backend4| (b.endpoint(), b.proto);
    let removed: HashSet<_> = plan
        .remove_backends
        .iter()
        .map(|(_, b)| endpoint(b))
        .collect();
    plan.purge_connections
        .iter()
        .partition(|(_, backend)| removed.contains(&endpoint(backend)))
}

/// Writes the plan's tables, each one's slots built just before it is
/// written (the datapath decides how many live at once).
fn write_tables(tables: &[TableWrite], maps: &mut dyn DatapathMaps) -> Result<(), MapsError> {
    let ids: Vec<u32> = tables.iter().map(|t| t.table_id).collect();
    maps.write_built_tables(&ids, &|i| tables[i].slots())
}
