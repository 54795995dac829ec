//! The lb agent: control path and operator commands.
pub mod datapath;
pub mod model;
