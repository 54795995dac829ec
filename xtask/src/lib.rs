//! Project tasks for lb, and the namespace testbed its demo and end-to-end
//! tests share.
pub mod apiserver;
pub mod demo;
pub mod demo_env;
pub mod deploy_check;
pub mod manifests;
pub mod scrape;
pub mod setup;
pub mod testbed;
pub mod traffic;
pub mod xdp_pass;
