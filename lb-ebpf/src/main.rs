//! The lb datapath: IPv4 TCP/UDP/SCTP service translation.
//!
//! - `lb_xdp_ingress` (XDP, external devices): DNAT of north-south traffic.
//! - `lb_tc_egress` (tcx egress, external devices): reverse NAT of replies.
//! - `lb_tc_pod_ingress` (tcx ingress, pod-facing devices): reverse NAT of
//!   local pods' replies to masqueraded flows.
//! - `lb_connect4`, `lb_sendmsg4`, `lb_recvmsg4`, `lb_getpeername4` (cgroup
//!   sock_addr): socket-level translation of east-west traffic.
//! - `lb_sock_egress` (cgroup skb egress): loadBalancerSourceRanges of
//!   sockets translated before their source was known.
//! - `lb_trace_socket` (XDP, never attached): `lb trace` of the socket
//!   hooks' decision under `BPF_PROG_TEST_RUN`.
//!
//! Loaded with the global `DRY_RUN` set (see `trace`), the programs change
//! no shared state and record their decisions for `lb trace`.
//!
//! Every hook shares the same steps, one module each: `parse`, `select`
//! (frontend and backend), `readers` (the selection window, counted for the
//! agent's wait), `affinity` (sessionAffinity ClientIP), `source_ranges`
//! (loadBalancerSourceRanges), `service_cidr` (`--service-cidr`), `ct`
//! (connection table), `frag` (IPv4 fragments' ports), `icmp_error` (ICMP errors about translated flows), `nat` (rewrites and
//! checksums; SCTP's CRC32c in `sctp`), `reject`, `stats`, `trace`. Map layouts, key construction,
//! names and counter reasons are defined in `lb-common`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The atomic add of `select_algorithm`, and the ordered one `readers` writes
// out (the build runs with RUSTC_BOOTSTRAP).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod affinity;
#[cfg(target_arch = "bpf")]
mod ct;
#[cfg(target_arch = "bpf")]
mod debug;
#[cfg(target_arch = "bpf")]
mod forward;
#[cfg(target_arch = "bpf")]
mod frag;
#[cfg(target_arch = "bpf")]
mod icmp_error;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod masquerade_rules;
#[cfg(target_arch = "bpf")]
mod nat;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod readers;
#[cfg(target_arch = "bpf")]
mod reject;
#[cfg(target_arch = "bpf")]
mod sctp;
#[cfg(target_arch = "bpf")]
mod select;
#[cfg(target_arch = "bpf")]
mod select_algorithm;
#[cfg(target_arch = "bpf")]
mod service_cidr;
#[cfg(target_arch = "bpf")]
mod snat;
#[cfg(target_arch = "bpf")]
mod snat_pod;
#[cfg(target_arch = "bpf")]
mod sock;
#[cfg(target_arch = "bpf")]
mod sock_egress;
#[cfg(target_arch = "bpf")]
mod source_ranges;
#[cfg(target_arch = "bpf")]
mod stats;
#[cfg(target_arch = "bpf")]
mod tc_egress;
#[cfg(target_arch = "bpf")]
mod trace;
#[cfg(target_arch = "bpf")]
mod xdp_ingress;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
