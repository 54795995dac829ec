//! The lb agent: control path and operator commands.
//!
//! Data flows through the rooms in this order (README "Layout"):
//! `source` -> `desired` -> `plan` -> `datapath`; `agent` composes them,
//! `ops` reads the datapath for operators, `model` is the vocabulary all of
//! them share.
pub mod agent;
pub mod datapath;
pub mod desired;
pub mod model;
pub mod ops;
pub mod plan;
pub mod source;
