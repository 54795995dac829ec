//! The balancing algorithm in the service map: operators read a Service
//! port's algorithm from its entry (`ServiceInfo.algorithm`); the datapath
//! reads each frontend's own flags.

use lb_common::ServiceInfo;

use super::diff::ServiceFrontends;
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
