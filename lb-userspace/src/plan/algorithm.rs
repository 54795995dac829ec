//! Selection's parts of a plan: the balancing algorithm in the service map
//! (operators read a Service port's algorithm from its entry,
//! `ServiceInfo.algorithm`; the datapath reads each frontend's own flags),
//! and which Maglev tables give their memory back.

use std::collections::BTreeSet;

use lb_common::ServiceInfo;

use super::{Applied, Plan, diff::ServiceFrontends};
use crate::datapath::codec::algorithm_code;

/// `info` with the algorithm of the Service port's frontends (they all
/// carry the Service's annotation).
pub(super) fn with_algorithm(
    mut info: ServiceInfo,
    frontends: &ServiceFrontends<'_>,
) -> ServiceInfo {
    if let Some((_, spec)) = frontends.first() {
        info.algorithm = algorithm_code(spec.algorithm);
    }
    info
}

/// The table ids whose quarantine `plan` ends (released by the plan
/// before it) and that it does not write again: nothing references them,
/// and no packet can still hold a frontend value naming them.
pub(super) fn tables_to_release(plan: &Plan, applied: &Applied) -> Vec<u32> {
    let written: BTreeSet<u32> = plan.write_tables.iter().map(|t| t.table_id).collect();
    applied
        .quarantined_tables
        .iter()
        .copied()
        .filter(|id| !written.contains(id))
        .collect()
}
