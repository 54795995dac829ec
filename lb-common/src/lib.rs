//! The contract between the datapath (`lb-ebpf`) and the agent (`lb-userspace`).
//!
//! Every map key and value is `#[repr(C)]`, `Pod`, free of implicit padding
//! (the kernel hashes whole keys, so padding bytes must be explicit and zero)
//! and carries its byte order in its field names: `_be` fields hold network
//! byte order exactly as the bytes sit in the packet.
#![no_std]

pub mod affinity;
pub mod algorithm;
pub mod csum;
pub mod ct;
pub mod flow;
pub mod flow_hash;
pub mod forward;
pub mod frag;
pub mod icmp;
pub mod icmp_error;
pub mod maglev;
pub mod maps;
pub mod masquerade_rules;
pub mod packet;
pub mod readers;
pub mod reason;
pub mod reject;
pub mod sctp;
pub mod service_cidr;
pub mod snat;
pub mod source_ranges;
pub mod trace;

pub use affinity::*;
pub use flow::{Endpoint4, Flow4};
pub use maps::*;
pub use source_ranges::*;
pub use trace::*;
