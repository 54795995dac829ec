//! Objects as small as their parse can leave them. serde's YAML and JSON
//! readers give no sequence length up front, so a `Vec` grows by doubling:
//! an EndpointSlice of 10 endpoints held room for 16, each endpoint's one
//! address room for 4, a Service's one port room for 4. At 10,000
//! Services of 10 endpoints that was about 31 MB of the agent's 188 MB
//! peak heap (heaptrack, manifest mode). Shrunk once, right after the
//! object is read and before it is kept (the manifest cache, the
//! reflector stores); the values do not change. EndpointSlices are then
//! kept in lb's own form (`source::slice`).

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};

/// Gives back the room a parse left in an object's lists.
pub trait Compact {
    fn compact(&mut self);
}

impl Compact for EndpointSlice {
    fn compact(&mut self) {
        if let Some(endpoints) = &mut self.endpoints {
            endpoints.shrink_to_fit();
            for endpoint in endpoints {
                endpoint.addresses.shrink_to_fit();
            }
        }
        if let Some(ports) = &mut self.ports {
            ports.shrink_to_fit();
        }
    }
}

impl Compact for Service {
    fn compact(&mut self) {
        let Some(spec) = &mut self.spec else {
            return;
        };
        for list in [&mut spec.ports].into_iter().flatten() {
            list.shrink_to_fit();
        }
        for list in [&mut spec.cluster_ips, &mut spec.external_ips]
            .into_iter()
            .flatten()
        {
            list.shrink_to_fit();
        }
    }
}

/// Nodes are one per node, read for a few fields: nothing worth shrinking.
impl Compact for Node {
    fn compact(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::manifests::parse_documents;

    /// A slice of 10 endpoints read from YAML holds exactly 10, and its
    /// one port exactly one.
    #[test]
    fn a_parsed_slice_holds_no_spare_room() {
        let mut text = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {name: web-1, namespace: app, labels: {kubernetes.io/service-name: web}}\n\
             addressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n"
            .to_owned();
        for i in 1..=10 {
            text.push_str(&format!(
                "- addresses: [10.0.0.{i}]\n  conditions: {{ready: true}}\n"
            ));
        }
        let set = parse_documents("web.yaml", &text);
        let slice = &set.slices[0];
        assert_eq!(
            (slice.endpoints.len(), slice.endpoints.capacity()),
            (10, 10)
        );
        assert_eq!(slice.ports.as_ref().unwrap().capacity(), 1);
        let mut grown = EndpointSlice {
            endpoints: Some(Vec::with_capacity(100)),
            ..EndpointSlice::default()
        };
        grown.compact();
        assert_eq!(grown.endpoints.unwrap().capacity(), 0);
    }

    #[test]
    fn a_parsed_service_holds_no_spare_room() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: app}\n\
             spec:\n  clusterIP: 10.96.0.10\n  clusterIPs: [10.96.0.10]\n  ports:\n  - {name: http, port: 80}\n";
        let set = parse_documents("web.yaml", text);
        let spec = set.services[0].spec.as_ref().unwrap();
        assert_eq!(spec.ports.as_ref().unwrap().capacity(), 1);
        assert_eq!(spec.cluster_ips.as_ref().unwrap().capacity(), 1);
    }
}
