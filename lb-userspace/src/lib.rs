//! The lb agent: control path and operator commands.
pub mod agent;
pub mod datapath;
pub mod desired;
pub mod explain;
pub mod inspect;
pub mod maglev;
pub mod manifest;
pub mod model;
pub mod output;
pub mod plan;
