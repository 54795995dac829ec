//! A ClusterIP and an endpoint address must differ: a ClusterIP equal to a
//! pod's address takes over that pod's traffic, and an endpoint at a
//! ClusterIP loops through the frontend. Who was there first keeps the
//! address: a ClusterIP programmed for its Service now ([`Holders`]) keeps
//! it and the endpoints there are refused; any other ClusterIP equal to an
//! endpoint address is refused. (With `--service-cidr` the API server's
//! ranges keep the two apart anyway.)

use std::collections::BTreeMap;

use super::{holders::Holders, problems::Problems, services::ServiceView, slices::SliceIndex};
use crate::model::ProblemCode;

pub(super) fn separate_cluster_ips_from_endpoints(
    views: &mut [ServiceView],
    slices: &mut SliceIndex,
    holders: &Holders,
    problems: &mut Problems,
) {
    let endpoints = slices.endpoint_addresses();
    let mut taken = BTreeMap::new();
    for view in views.iter_mut() {
        view.cluster_ips.retain(|addr| {
            let newcomer = endpoints.contains(addr)
                && !holders.holds_address(*addr, &view.namespace, &view.name);
            if newcomer {
                problems.push(
                    &view.object,
                    ProblemCode::ClusterIpIsEndpoint,
                    format!(
                        "clusterIP \"{addr}\" is the address of an endpoint (a pod or node): serving it would take that endpoint's traffic; it is not served, use an address from the service CIDR"
                    ),
                );
            } else {
                taken.insert(*addr, view.object.clone());
            }
            !newcomer
        });
    }
    slices.refuse_cluster_ips(&taken, problems);
}
