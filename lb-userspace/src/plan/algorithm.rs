//! Selection's parts of a plan: the balancing algorithm in the service map
//! (operators read a Service port's algorithm from its entry,
//! `ServiceInfo.algorithm`; the datapath reads each frontend's own flags),
//! and which Maglev tables give their memory back.

use std::collections::BTreeSet;

use lb_common::ServiceInfo;

use super::{Applied, Plan, diff::ServiceFrontends};
use crate::{
    datapath::codec::{algorithm_code, service_info},
    model::{ServicePortInfo, ServicePortName},
};

/// The service map's entry of a Service port, with the algorithm of its
/// frontends (they all carry the Service's annotation).
pub(super) fn service_entry(
    name: &ServicePortName,
    port: &ServicePortInfo,
    frontends: &ServiceFrontends<'_>,
) -> ServiceInfo {
    let mut info = service_info(name, port);
    if let Some((_, spec)) = frontends.first() {
        info.algorithm = algorithm_code(spec.algorithm);
    }
    info
}

/// The table ids whose quarantine `plan` ends (freed by the plan before
/// it: their Service port stopped using them) and that it does not write
/// again: nothing references them, and no packet can still hold a
/// frontend value naming them.
pub(super) fn tables_to_release(plan: &Plan, applied: &Applied) -> Vec<u32> {
    let written: BTreeSet<u32> = plan.write_tables.iter().map(|t| t.table_id).collect();
    applied
        .quarantined_tables
        .iter()
        .copied()
        .filter(|id| !written.contains(id))
        .collect()
}
