//! The UDP flows a plan purges: kube-proxy's conntrack cleanup
//! (pkg/proxy/conntrack/cleanup.go) per Service port and endpoint, as
//! `usage::stale_udp` finds them, in map terms. Per port: a backend that
//! stops serving one UDP Service port keeps the flows of another that
//! still has it.

use lb_common::Backend4;

use super::{Applied, usage::Usage};
use crate::{
    datapath::codec::{BackendFlags, backend_from_value, backend_value},
    model::{Backend, Protocol, ServicePortName},
};

/// The planner's first plan knows no earlier listing (the agent started,
/// maybe on a pinned datapath that served meanwhile): a UDP port's flows
/// may go to the backends its live tables name, and those that are no
/// serving endpoint of it now are stale (cleanup.go reconciles with the
/// conntrack table alike, whatever happened before).
pub(super) fn stale_at_start(usage: &Usage, applied: &Applied) -> Vec<(ServicePortName, Backend)> {
    let mut stale = Vec::new();
    for (service, id) in &applied.services {
        let serving = usage.serving_udp(service).unwrap_or_default();
        if service.protocol != Protocol::Udp || serving.is_empty() {
            continue;
        }
        let keys = applied
            .index
            .service_frontends
            .get(id)
            .into_iter()
            .flatten();
        let tables = keys
            .filter_map(|key| applied.frontends.get(key))
            .filter(|fe| fe.backend_count > 0)
            .map(|fe| fe.table_id);
        let named = tables.flat_map(|table| applied.table_backend_ids(table).iter());
        let backends = named.filter_map(|id| applied.backends.get(id).and_then(backend_from_value));
        let gone: std::collections::BTreeSet<Backend> = backends
            .filter(|backend| serving.binary_search(backend).is_err())
            .collect();
        stale.extend(gone.into_iter().map(|backend| (service.clone(), backend)));
    }
    stale
}

/// (service id, backend) of each stale (port, backend); a port without an
/// id in the maps has no flows yet.
pub(super) fn purges(
    stale: &[(ServicePortName, Backend)],
    applied: &Applied,
) -> Vec<(u32, Backend4)> {
    stale
        .iter()
        .filter_map(|(service, backend)| {
            let id = applied.services.get(service)?;
            let value = backend_value(backend, BackendFlags::default()).ok()?;
            Some((*id, value))
        })
        .collect()
}
