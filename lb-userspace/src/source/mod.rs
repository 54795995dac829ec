//! Where Services, EndpointSlices and the node's facts come from.
pub mod manifests;
