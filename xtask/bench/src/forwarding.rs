//! Section: forwarding in XDP (`--xdp-forward`) against the kernel's
//! forwarding, side by side. Two agents, each on a two-node testbed of its
//! own, the remote Service's eight pods on node-b: the live-frames
//! generator sends UDP to its NodePort (policy Cluster: every frame is
//! masqueraded and leaves node-a by the link to node-b), and the frames
//! that reach node-b's pods are counted. One agent leaves the translated
//! frames to the stack (XDP_PASS), the other forwards them from XDP (a
//! redirect from ext0 to the link); the per-frame work of node-b and its
//! pods is the same for both.
//!
//! Established flows only (64 fixed 5-tuples): each new flow of a live
//! stream would claim a masquerade port, and a few hundred thousand in a
//! run would exhaust the eight pods' ports (4,536 each), measuring the
//! exhaustion instead of the forwarding.

use std::{net::Ipv4Addr, thread, time::Duration};

use anyhow::Result;
use lb::datapath::KernelMaps;
use lb_common::reason::Reason;
use xtask::testbed::{EXTERNAL_DEVICE, NODE_ADDR, Testbed};

use crate::{
    BenchOptions,
    fixture::{AgentUnderTest, REMOTE_PODS, REMOTE_UDP_NODE_PORT},
    live_frames::{FrameSpec, Generator, Sent},
    report::Section,
    throughput_nodes::{client_netns, mac, prepare, rx_packets},
};

const CASE: &str = "established flows to pods on another node: delivered";
const STACK: &str = "lb, forwarded by the stack";
const XDP: &str = "lb --xdp-forward";

/// What one run moved, and its proof.
#[derive(Clone, Copy, Debug, Default)]
struct Counted {
    at_remote_pods: u64,
    established: u64,
    from_xdp: u64,
}

pub fn section(options: &BenchOptions) -> Result<Section> {
    let mut section = Section::new(
        "Forwarding in XDP",
        "Two agents side by side, each on a two-node testbed of its own with the remote \
         Service's eight pods on node-b: the live-frames generator sends 60-byte UDP frames \
         from the client to node-a's NodePort 30086 (policy Cluster: masqueraded to \
         node-a's address, then routed over the link to node-b), 64 fixed 5-tuples \
         (established flows). Delivered is the frames at node-b's pods' eth0 per second. \
         One agent leaves translated frames to the kernel's forwarding (XDP_PASS), the \
         other runs with --xdp-forward (FIB lookup and a redirect from ext0 to the link). \
         A sample counts only with its proof: lb's established translations for every \
         frame delivered, and for --xdp-forward its redirects.",
    );
    let length = if options.quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(2)
    };
    let stack = AgentUnderTest::start_two_nodes(1, &[])?;
    let xdp = AgentUnderTest::start_two_nodes(1, &["--xdp-forward"])?;
    let subjects = [(STACK, &stack), (XDP, &xdp)];
    let mut generators = Vec::new();
    for (_, aut) in subjects {
        prepare(&aut.bed)?;
        let generator = Generator::load(&frames(&aut.bed)?)?;
        generator.run(&client_netns(&aut.bed), "eth0", Duration::from_millis(200))?;
        generators.push(generator);
    }
    let mut rates = vec![Vec::new(); subjects.len()];
    let mut last_word = vec![String::new(); subjects.len()];
    for _ in 0..options.repetitions() {
        for (i, (subject, aut)) in subjects.iter().enumerate() {
            let (sent, counted) = measure(aut, &generators[i], length)?;
            match unproven(subject, &sent, &counted) {
                None => {
                    rates[i].push(counted.at_remote_pods as f64 / sent.elapsed.as_secs_f64());
                    last_word[i] = format!(
                        "sent {} in {:.2} s, at node-b's pods {}, dnat_established +{}, \
                         forwarded from XDP +{}",
                        sent.frames,
                        sent.elapsed.as_secs_f64(),
                        counted.at_remote_pods,
                        counted.established,
                        counted.from_xdp
                    );
                }
                Some(why) => last_word[i] = format!("not reported: {why}"),
            }
        }
    }
    for (i, (subject, _)) in subjects.iter().enumerate() {
        section.figure(CASE, subject, 1, "frames/s", &rates[i]);
        section.note(format!("{subject} (last repetition): {}", last_word[i]));
    }
    section.ratio(
        "established flows to another node: --xdp-forward / the stack (delivered)",
        (CASE, XDP, 1),
        (CASE, STACK, 1),
    );
    Ok(section)
}

fn unproven(subject: &str, sent: &Sent, counted: &Counted) -> Option<String> {
    if counted.at_remote_pods * 100 < sent.frames {
        return Some(format!(
            "only {} of {} frames reached node-b's pods",
            counted.at_remote_pods, sent.frames
        ));
    }
    if counted.established * 10 < counted.at_remote_pods * 9 {
        return Some(format!(
            "lb translated {} frames but {} reached the pods",
            counted.established, counted.at_remote_pods
        ));
    }
    if subject == XDP && counted.from_xdp * 10 < counted.at_remote_pods * 9 {
        return Some(format!(
            "{} frames forwarded from XDP, {} at the pods",
            counted.from_xdp, counted.at_remote_pods
        ));
    }
    None
}

fn measure(
    aut: &AgentUnderTest,
    generator: &Generator,
    length: Duration,
) -> Result<(Sent, Counted)> {
    let before = count(aut)?;
    let sent = generator.run(&client_netns(&aut.bed), "eth0", length)?;
    thread::sleep(Duration::from_millis(100));
    let after = count(aut)?;
    Ok((
        sent,
        Counted {
            at_remote_pods: after.at_remote_pods - before.at_remote_pods,
            established: after.established - before.established,
            from_xdp: after.from_xdp - before.from_xdp,
        },
    ))
}

fn count(aut: &AgentUnderTest) -> Result<Counted> {
    let mut counted = Counted::default();
    for pod in 0..REMOTE_PODS {
        counted.at_remote_pods += rx_packets(&aut.bed.remote_pod_ns(pod), "eth0")?;
    }
    let maps = KernelMaps::open_pinned(&aut.bed.pin_dir)?;
    counted.established = maps.stat(Reason::DnatEstablished)?;
    counted.from_xdp = maps
        .forward_stats()?
        .iter()
        .filter(|(outcome, _)| outcome.in_xdp())
        .map(|(_, n)| n)
        .sum();
    Ok(counted)
}

/// Established flows from the client to node-a's UDP NodePort of the
/// remote Service.
fn frames(bed: &Testbed) -> Result<FrameSpec> {
    Ok(FrameSpec {
        src_mac: mac(&bed.client_ns(), "eth0")?,
        dst_mac: mac(&bed.node_ns(), EXTERNAL_DEVICE)?,
        src_base: Ipv4Addr::new(10, 128, 0, 0),
        src_mask: 0,
        sport_base: 0x8000,
        sport_mask: 63,
        dst_base: NODE_ADDR,
        dst_count: 1,
        dport: REMOTE_UDP_NODE_PORT,
    })
}
