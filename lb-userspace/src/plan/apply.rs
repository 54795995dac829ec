//! Applying a plan: its writes in the order that keeps every packet on a
//! whole state (see the module comment of `plan`).

use super::{Applied, Plan, TableWrite};
use crate::datapath::{DatapathMaps, MapsError};

/// Tables built and written together: their slots exist only while they
/// are written (about 1 MiB at 4 KiB a table), and the kernel writer swaps
/// as many in per update of the outer map (one RCU wait).
pub(crate) const TABLES_PER_WRITE: usize = 256;

/// Applies a plan in order, then records it in `applied`. On error the maps
/// hold a consistent prefix of the plan (every step leaves them valid), and
/// `applied` is re-read by the caller before the next attempt.
pub fn apply(
    plan: &Plan,
    maps: &mut dyn DatapathMaps,
    applied: &mut Applied,
) -> Result<(), MapsError> {
    for (id, info) in &plan.set_services {
        maps.set_service(*id, info)?;
    }
    for (id, value) in &plan.set_backends {
        maps.set_backend(*id, value)?;
    }
    write_tables(&plan.write_tables, maps)?;
    for (id, range) in &plan.set_source_ranges {
        maps.set_source_range(*id, range)?;
    }
    for (key, value) in &plan.set_frontends {
        maps.set_frontend(key, value)?;
    }
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
    // Purged before the backends go (an apply interrupted before it is
    // purged again: `Planner::not_applied`).
    if !plan.purge_connections.is_empty() {
        maps.purge_service_connections(&plan.purge_connections)?;
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

/// Writes the plan's tables `TABLES_PER_WRITE` at a time, each chunk's
/// slots built just before it is written and dropped after.
fn write_tables(tables: &[TableWrite], maps: &mut dyn DatapathMaps) -> Result<(), MapsError> {
    for chunk in tables.chunks(TABLES_PER_WRITE) {
        let slots: Vec<Vec<u32>> = chunk.iter().map(TableWrite::slots).collect();
        let writes: Vec<(u32, &[u32])> = chunk
            .iter()
            .zip(&slots)
            .map(|(table, slots)| (table.table_id, slots.as_slice()))
            .collect();
        maps.write_tables(&writes)?;
    }
    Ok(())
}
