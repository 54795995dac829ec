//! The flow the per-packet section's established and reply paths replay,
//! opened as a client and a pod open one: the client's SYN through XDP,
//! the pod's SYN-ACK through tc egress, the client's ACK through XDP. The
//! flow is then assured and lives in the table of assured flows, as every
//! established connection does; a flow left after its SYN would stay in
//! the table of new flows, one lookup further, and be measured as no real
//! connection is.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{Context, Result, bail};
use lb::datapath::{KernelMaps, LiveProgram};
use lb_common::reason::Reason;

use crate::{
    fixture::TARGET_TCP_NODE_PORT,
    frames,
    packet_streams::XDP_PASS,
    per_packet::{node_port, pods},
};

/// The known flow's client: a source port no new flow of
/// [`frames::client`] uses.
pub const KNOWN_CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 200), 65_100);

/// Opens the known flow through the agent's programs; returns the pod it
/// reached. Each step's output and counters are checked: a flow that did
/// not become assured is refused, not measured.
pub fn open(xdp: &LiveProgram, tc: &LiveProgram, maps: &KernelMaps) -> Result<SocketAddrV4> {
    let target = node_port(TARGET_TCP_NODE_PORT);
    let new_before = maps.stat(Reason::DnatNew)?;
    let promoted_before = maps.stat(Reason::CtPromoted)?;
    let pod = client_segment(xdp, frames::tcp(KNOWN_CLIENT, target, true), "SYN")?;
    if maps.stat(Reason::DnatNew)? != new_before + 1 {
        bail!("the known flow's SYN was not counted as dnat_new");
    }
    let out = tc.test_run(&frames::tcp_syn_ack(pod, KNOWN_CLIENT), 1)?;
    let seen = frames::parse_checked(&out.packet_out).context("the pod's SYN-ACK")?;
    if (seen.src, seen.dst) != (target, KNOWN_CLIENT) {
        bail!(
            "the pod's SYN-ACK left as {} -> {}, not {target} -> {KNOWN_CLIENT}",
            seen.src,
            seen.dst
        );
    }
    let acked = client_segment(xdp, frames::tcp(KNOWN_CLIENT, target, false), "ACK")?;
    if acked != pod {
        bail!("the known flow's ACK went to {acked}, its SYN to {pod}");
    }
    if maps.stat(Reason::CtPromoted)? != promoted_before + 1 {
        bail!("the known flow's handshake did not make it assured (ct_promoted did not rise)");
    }
    Ok(pod)
}

/// Runs one of the client's segments through XDP; returns the pod it went to.
fn client_segment(xdp: &LiveProgram, frame: Vec<u8>, what: &str) -> Result<SocketAddrV4> {
    let out = xdp.test_run(&frame, 1)?;
    let seen = frames::parse_checked(&out.packet_out)
        .with_context(|| format!("the known flow's {what}"))?;
    if out.return_value != XDP_PASS || !pods().contains(&seen.dst) {
        bail!(
            "the known flow's {what} came out with verdict {} to {}, not XDP_PASS to a pod",
            out.return_value,
            seen.dst
        );
    }
    Ok(seen.dst)
}
