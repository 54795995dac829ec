//! The UDP flows a plan purges: kube-proxy's conntrack cleanup
//! (pkg/proxy/conntrack/cleanup.go) per Service port and endpoint, as
//! `usage::stale_udp` finds them, in map terms. Per port: a backend that
//! stops serving one UDP Service port keeps the flows of another that
//! still has it.

use lb_common::Backend4;

use super::Applied;
use crate::{
    datapath::codec::{BackendFlags, backend_value},
    model::{Backend, ServicePortName},
};

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
