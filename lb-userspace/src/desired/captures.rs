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

#[cfg(test)]
mod tests {
    use crate::desired::test_support::*;

    const GOOD: &str = "apiVersion: v1
kind: Service
metadata: {name: good}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: good-1
  labels: {kubernetes.io/service-name: good}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.244.1.7]
";

    fn run(extra: &str, holders: &Holders) -> DesiredState {
        let set = parse_documents("all.yaml", &format!("{GOOD}---\n{extra}"));
        assert_eq!(set.problems, vec![]);
        crate::desired::compute(
            &set.services,
            &set.slices,
            &node("node-a"),
            &Rules::default(),
            holders,
        )
    }

    fn good_endpoints(state: &DesiredState) -> Vec<String> {
        state.frontends[&fe("10.96.0.10", 80, Tcp, Internal)]
            .endpoints
            .iter()
            .map(|e| e.backend.to_string())
            .collect()
    }

    /// lb's rule: a ClusterIP at a pod's address would take the pod's
    /// traffic (with `--service-cidr` the range refuses it first).
    #[test]
    fn a_new_cluster_ip_at_an_endpoint_address_is_refused() {
        let state = run(
            "apiVersion: v1
kind: Service
metadata: {name: thief}
spec:
  clusterIP: 10.244.1.7
  ports: [{port: 8080}]
",
            &Holders::default(),
        );
        assert_eq!(state.problems.len(), 1);
        assert_eq!(state.problems[0].object, "Service default/thief");
        assert_eq!(state.problems[0].code, ProblemCode::ClusterIpIsEndpoint);
        assert_eq!(good_endpoints(&state), vec!["10.244.1.7:8080"]);
        assert_eq!(state.frontends.len(), 1, "the thief has no frontend");
    }

    /// A ClusterIP serving now keeps its address: the endpoint that appears
    /// there is refused instead (it would loop through the frontend).
    #[test]
    fn an_endpoint_at_a_serving_cluster_ip_is_refused() {
        let set = parse_documents("good.yaml", GOOD);
        let holders = holders_of(&compute(&set.services, &set.slices, &node("node-a")));
        let state = run(
            "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: good-2
  labels: {kubernetes.io/service-name: good}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.96.0.10]
",
            &holders,
        );
        assert_eq!(
            state.problems,
            vec![error(
                ProblemCode::EndpointIsClusterIp,
                "EndpointSlice default/good-2",
                "endpoints[0].addresses[0] \"10.96.0.10\" is the ClusterIP of Service default/good: an endpoint must be a pod or node address; the endpoint is not used"
            )]
        );
        assert_eq!(good_endpoints(&state), vec!["10.244.1.7:8080"]);
    }
}
