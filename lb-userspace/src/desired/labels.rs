//! The labels and annotations kube-proxy reads, under their API names.

/// Services with this label belong to another proxy (kube-proxy's selector).
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Headless Services (set by the endpoints controllers) need no proxying.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Names the Service an EndpointSlice belongs to.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Topology Aware Routing, current spelling.
pub const ANNOTATION_TOPOLOGY_MODE: &str = "service.kubernetes.io/topology-mode";
/// The balancing algorithm of a Service (lb's own, beyond kube-proxy).
pub const ANNOTATION_ALGORITHM: &str = "lb.kubernetes.io/algorithm";
/// Topology Aware Hints, the older spelling still honoured by kube-proxy.
pub const ANNOTATION_TOPOLOGY_HINTS: &str = "service.kubernetes.io/topology-aware-hints";
