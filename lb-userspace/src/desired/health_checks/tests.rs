use super::*;
use crate::desired::test_support::{node, parse_documents};

const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: local, namespace: hc}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.1
  externalTrafficPolicy: Local
  healthCheckNodePort: 32100
  ports: [{name: http, port: 80, nodePort: 30001}, {name: https, port: 443, nodePort: 30002}]
---
apiVersion: v1
kind: Service
metadata: {name: cluster, namespace: hc}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.2
  externalTrafficPolicy: Cluster
  healthCheckNodePort: 32101
  ports: [{port: 80, nodePort: 30003}]
---
apiVersion: v1
kind: Service
metadata: {name: nodeport, namespace: hc}
spec:
  type: NodePort
  clusterIP: 10.96.0.3
  externalTrafficPolicy: Local
  healthCheckNodePort: 32102
  ports: [{port: 80, nodePort: 30004}]
---
apiVersion: v1
kind: Service
metadata:
  name: theirs
  namespace: hc
  labels: {service.kubernetes.io/service-proxy-name: other}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.4
  externalTrafficPolicy: Local
  healthCheckNodePort: 32103
  ports: [{port: 80, nodePort: 30005}]
";

fn slice(name: &str, endpoints: &str) -> String {
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: hc, labels: {{kubernetes.io/service-name: local}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}, {{name: https, port: 8443}}]\nendpoints:\n{endpoints}"
    )
}

fn checks(text: &str) -> BTreeMap<ServiceRef, HealthCheck> {
    let set = parse_documents("hc.yaml", text);
    health_checks(
        &set.services,
        &set.slices,
        &node("node-a"),
        &Rules::default(),
    )
}

fn local() -> ServiceRef {
    ServiceRef {
        namespace: "hc".to_owned(),
        name: "local".to_owned(),
    }
}

/// Upstream: `NeedsHealthCheck` (pkg/api/v1/service): only type
/// LoadBalancer with `externalTrafficPolicy: Local` gets a health check
/// port; a Service labelled for another proxy is not ours at all.
#[test]
fn only_load_balancers_with_local_policy_need_a_health_check() {
    let found = checks(SERVICES);
    assert_eq!(
        found,
        BTreeMap::from([(
            local(),
            HealthCheck {
                port: 32100,
                local_endpoints: 0
            }
        )])
    );
}

/// Upstream: `LocalReadyEndpoints` counts distinct addresses of this
/// node's ready endpoints across all the Service's ports (10.244.1.5 on
/// two slices counts once); not-ready, terminating and other nodes'
/// endpoints do not count.
#[test]
fn local_ready_endpoints_are_distinct_local_ready_addresses() {
    let text = format!(
        "{SERVICES}{}{}",
        slice(
            "local-1",
            "- {addresses: [10.244.1.5], nodeName: node-a}\n\
             - {addresses: [10.244.1.6], nodeName: node-a, conditions: {ready: false, serving: true, terminating: true}}\n\
             - {addresses: [10.244.2.7], nodeName: node-b}\n\
             - {addresses: [010.244.001.008], nodeName: node-a, conditions: {ready: true}}\n"
        ),
        slice(
            "local-2",
            "- {addresses: [10.244.1.5], nodeName: node-a}\n- {addresses: [10.244.1.9]}\n"
        ),
    );
    assert_eq!(checks(&text)[&local()].local_endpoints, 2);
}
