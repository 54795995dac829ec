//! A Service port that cannot be planned (no table or backend id left, an
//! address the maps cannot hold): what it keeps serving meanwhile, and the
//! problem that says so.

use super::{
    Applied, PlanError,
    diff::{InUse, ServiceFrontends},
};
use crate::{
    datapath::codec::frontend_key,
    model::{Problem, ProblemCode, ServicePortName},
};

/// Keeps the frontends a Service port that cannot be planned has in the
/// maps (those carrying its id, and those at its frontends' addresses)
/// exactly as they are, with what they reference. Returns how many.
pub(super) fn keep_serving(
    service: &ServicePortName,
    frontends: &ServiceFrontends<'_>,
    applied: &Applied,
    in_use: &mut InUse,
) -> usize {
    let known_id = applied.services.get(service).copied();
    let at_its_addresses = frontends
        .iter()
        .filter_map(|(frontend, _)| frontend_key(frontend).ok())
        .filter(|key| applied.frontends.contains_key(key));
    let carrying_its_id = known_id
        .and_then(|id| applied.index.service_frontends.get(&id))
        .into_iter()
        .flatten()
        .copied();
    let mut kept = 0;
    for key in carrying_its_id.chain(at_its_addresses) {
        if !in_use.frontends.insert(key) {
            continue;
        }
        let value = &applied.frontends[&key];
        kept += 1;
        in_use.services.insert(value.service_id);
        if value.backend_count > 0 {
            in_use.tables.insert(value.table_id);
            in_use
                .kept_backends
                .extend(applied.table_backend_ids(value.table_id));
        }
    }
    kept
}

pub(super) fn problem(service: &ServicePortName, err: &PlanError, kept: usize) -> Problem {
    let port = if service.port_name.is_empty() {
        format!("port {}", service.protocol)
    } else {
        format!("port {} ({})", service.port_name, service.protocol)
    };
    let meanwhile = if kept == 0 {
        "until then it is not served".to_string()
    } else {
        format!("until then its {kept} frontend(s) keep their last state")
    };
    let code = match err {
        PlanError::Codec(_) => ProblemCode::UnsupportedFamily,
        _ => ProblemCode::MapFull,
    };
    Problem::error(
        format!("Service {}/{}", service.namespace, service.name),
        code,
        format!("{port}: {err}; {meanwhile}"),
    )
}
