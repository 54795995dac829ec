//! Section 2: throughput through the namespace topology. The bench's
//! live-frames generator sends UDP from the client's veth to the target's
//! NodePort (198.51.100.1:30053, UDP 5353 on the pods) and the frames that
//! reach the pods are counted, for lb (the real agent), kube-proxy's
//! iptables and nftables rules on the same topology (no agent), plain
//! forwarding (no rules, straight to the pods' addresses), the bench's
//! minimal stateless XDP DNAT (the limit: one frontend, one pod, no state)
//! and its redirecting variant (the ceiling: no forwarding path at all).
//!
//! Two cases: new flows (every frame a new 5-tuple, so lb's flow-table
//! inserts and conntrack's inserts are what is compared) and established
//! flows (64 fixed 5-tuples). The delivered rate is the figure; a sample
//! counts only with its proof (frames at the pods, and lb's own DNAT
//! counters for lb), and a subject without proof has no figure, only a note.

use std::{
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;
use xtask::testbed::EXTERNAL_DEVICE;

use crate::{
    BenchOptions,
    fixture::max_services,
    live_frames::{FrameSpec, Generator, Sent},
    program_time::{self, RunStats},
    report::Section,
    throughput_nodes::{
        Counters, Node, SUBJECTS, client_netns, counters, mac, prepare, start_nodes, xdp_program,
    },
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    NewFlows,
    Established,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::NewFlows => "new flows",
            Case::Established => "established flows",
        }
    }
}

const CASES: [Case; 2] = [Case::NewFlows, Case::Established];

/// One run's result and its evidence.
#[derive(Clone, Copy, Debug)]
struct Sample {
    sent: Sent,
    delta: Counters,
}

impl Sample {
    fn delivered_rate(&self) -> f64 {
        self.delta.at_pods as f64 / self.sent.elapsed.as_secs_f64()
    }

    /// Why this sample cannot be reported, if it cannot.
    fn unproven(&self, subject: &str, case: Case) -> Option<String> {
        let d = &self.delta;
        if d.at_pods * 100 < self.sent.frames {
            return Some(format!(
                "only {} of {} frames reached the pods",
                d.at_pods, self.sent.frames
            ));
        }
        if subject == SUBJECTS[0] {
            let translated = d.dnat_new + d.dnat_established;
            // Frames to the NodePort reach a pod only translated.
            if translated * 10 < d.at_pods * 9 {
                return Some(format!(
                    "lb translated {translated} frames but {} reached the pods",
                    d.at_pods
                ));
            }
            let dominant = match case {
                Case::NewFlows => d.dnat_new,
                Case::Established => d.dnat_established,
            };
            if dominant * 2 < translated {
                return Some(format!(
                    "lb counted {} new and {} established translations, not {}",
                    d.dnat_new,
                    d.dnat_established,
                    case.name()
                ));
            }
        }
        None
    }

    fn evidence(&self) -> String {
        let d = &self.delta;
        let mut text = format!(
            "sent {} in {:.2} s, entered ext0 {}, arrived at the pods {}",
            self.sent.frames,
            self.sent.elapsed.as_secs_f64(),
            d.at_ext0,
            d.at_pods
        );
        if d.dnat_new + d.dnat_established > 0 {
            text += &format!(
                ", dnat_new +{}, dnat_established +{}, redirected from XDP +{}",
                d.dnat_new, d.dnat_established, d.xdp_redirected
            );
        }
        if d.agent_cpu_ms > 0 {
            text += &format!(", the agent's own CPU +{} ms", d.agent_cpu_ms);
        }
        if d.conntrack > 0 {
            text += &format!(", conntrack entries after {}", d.conntrack);
        }
        text
    }
}

pub fn section(options: &BenchOptions) -> Result<Section> {
    let mut section = Section::new(
        "Throughput through the namespace topology",
        "The bench's live-frames generator (an XDP program of the bench's own run with \
         BPF_PROG_RUN and BPF_F_TEST_XDP_LIVE_FRAMES from the client's namespace, returning \
         XDP_TX out of the client's veth) sends 60-byte UDP frames to the target's NodePort \
         198.51.100.1:30053 (UDP 5353 on three pods). It rewrites every frame's headers: for \
         new flows a random source address in 10.128.0.0/16 and port (every frame a new \
         5-tuple), for established flows one of 64 fixed 5-tuples. The delivered rate is the \
         frames that arrived at the pods (the pods' eth0 rx counters) per second; the offered \
         rate is what the generator sent. Every node's pods are routed veths (each pod's /32 \
         routed to its veth, GRO on at the pod's end, as Calico and Cilium wire pods). \
         Subjects: lb (the real agent, with --xdp-forward: translated frames redirected from \
         XDP into the pod's veth; the evidence lines count them), kube-proxy's iptables \
         and nftables rules for the same Services loaded in the node's namespace with no agent \
         (conntrack and NAT do the work), plain forwarding (no rules; the frames go to the \
         pods' addresses and the node routes them), and the bench's minimal stateless XDP \
         DNAT program on ext0 (the target's UDP NodePort rewritten to the first pod, \
         XDP_PASS; no maps, no state: the limit), and its redirecting variant (the same \
         rewrite plus the pod's and its veth's MACs, redirected to the first pod's veth, \
         past the node's forwarding path: the ceiling of an XDP datapath here). Runs are \
         interleaved per repetition; the \
         generator and the node share this machine's cores, so the offered rate falls as the \
         node's cost per frame rises.",
    );
    let length = if options.quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(2)
    };
    for services in service_counts(options) {
        if services > max_services() {
            section.note(format!("{services} Services: more than lb holds, skipped"));
            continue;
        }
        measure_at(&mut section, options, services, length)?;
    }
    for case in CASES {
        let name = case.name();
        for services in service_counts(options) {
            let delivered = format!("{name}: delivered");
            for (label, other) in [
                ("iptables", SUBJECTS[1]),
                ("nftables", SUBJECTS[2]),
                ("plain forwarding", SUBJECTS[3]),
                ("stateless XDP DNAT", SUBJECTS[4]),
                ("redirecting XDP DNAT", SUBJECTS[5]),
            ] {
                section.ratio(
                    &format!("{name}, {services} Services: lb / {label} (delivered)"),
                    (&delivered, SUBJECTS[0], services),
                    (&delivered, other, services),
                );
            }
        }
        let file = name.replace(' ', "-");
        section.plot(
            &format!("throughput-{file}-delivered.svg"),
            &format!("{name}: frames delivered to the pods"),
            "frames/s",
            &format!("{name}: delivered"),
        );
        section.plot(
            &format!("throughput-{file}-offered.svg"),
            &format!("{name}: frames offered by the generator"),
            "frames/s",
            &format!("{name}: offered"),
        );
    }
    section.note(
        "Offered and delivered are nearly equal: a live-frames run transmits into ext0's \
         NAPI on the generator's own CPU, so the node's whole receive path runs in the \
         generator's time and paces it. The rate is the path's capacity on one core, not a \
         loss figure; it is far below the generator's own ceiling (about 1.5-2 Mpps).",
    );
    section.note(
        "The pods' lb-probe servers answer what they can; the rest overflow their sockets. \
         Counts are of frames arriving at the pods' interfaces, not of replies.",
    );
    section.note(
        "kube-proxy's rules are the generator's TCP shapes with the target's port made its UDP \
         port (53, NodePort 30053, pods on 5353), as kube-proxy writes it; the fillers are as \
         the control-plane section loads them.",
    );
    section.note(
        "ext0 gets GRO on in every subject: a veth takes XDP_TX'd frames only when its peer \
         runs NAPI (an XDP program or GRO; design.md section 8).",
    );
    section.note(
        "XDP program time a frame: after the repetitions, one more run of each case at every \
         node with an XDP program on ext0 (lb, the limit, the ceiling), with the kernel's run \
         statistics on (BPF_ENABLE_STATS): the program's accounted time over its runs. The \
         statistics cost two clock reads a run, so no rate above is measured with them.",
    );
    section.note(
        "The stateless XDP DNAT is proven before it is measured (crafted frames under \
         BPF_PROG_TEST_RUN come out rewritten with valid checksums); under traffic, frames \
         to the NodePort reach a pod only translated (the node has no listener on 30053), \
         so frames at the pods are its proof.",
    );
    Ok(section)
}

/// 1, 1,000 and 10,000 Services; `--quick` only proves every subject
/// works, at one Service (six testbeds per count are its cost).
fn service_counts(options: &BenchOptions) -> Vec<usize> {
    let counts = options.service_counts(&[1, 1000, 10_000]);
    let keep = if options.quick { 1 } else { counts.len() };
    counts.into_iter().take(keep).collect()
}

fn measure_at(
    section: &mut Section,
    options: &BenchOptions,
    services: usize,
    length: Duration,
) -> Result<()> {
    let started = Instant::now();
    let nodes = start_nodes(services)?;
    eprintln!(
        "bench: throughput: {} nodes at {services} Services ready in {:.1} s",
        nodes.len(),
        started.elapsed().as_secs_f64()
    );
    let mut generators = Vec::new();
    for node in &nodes {
        prepare(node.bed())?;
        let mut per_case = Vec::new();
        for case in CASES {
            let generator = Generator::load(&frame_spec(node, case)?)?;
            // Warm up: neighbours resolved, conntrack's table in use.
            generator.run(
                &client_netns(node.bed()),
                "eth0",
                Duration::from_millis(200),
            )?;
            per_case.push(generator);
        }
        generators.push(per_case);
    }
    let mut samples = vec![vec![Vec::new(); CASES.len()]; nodes.len()];
    let mut last_word = vec![vec![String::new(); CASES.len()]; nodes.len()];
    for _ in 0..options.repetitions() {
        for (c, case) in CASES.iter().enumerate() {
            for (n, node) in nodes.iter().enumerate() {
                let sample = measure(node, &generators[n][c], length)?;
                match sample.unproven(node.subject(), *case) {
                    None => {
                        last_word[n][c] = sample.evidence();
                        samples[n][c].push(sample);
                    }
                    Some(why) => last_word[n][c] = format!("not reported: {why}"),
                }
            }
        }
    }
    program_times(section, &nodes, &generators, services, length)?;
    for (n, node) in nodes.iter().enumerate() {
        for (c, case) in CASES.iter().enumerate() {
            let runs = &samples[n][c];
            let name = case.name();
            let delivered: Vec<f64> = runs.iter().map(Sample::delivered_rate).collect();
            let offered: Vec<f64> = runs.iter().map(|s| s.sent.rate()).collect();
            section.figure(
                &format!("{name}: delivered"),
                node.subject(),
                services,
                "frames/s",
                &delivered,
            );
            section.figure(
                &format!("{name}: offered"),
                node.subject(),
                services,
                "frames/s",
                &offered,
            );
            section.note(format!(
                "{}, {services} Services, {name} (last repetition): {}",
                node.subject(),
                last_word[n][c]
            ));
        }
    }
    Ok(())
}

/// One more run of each case at every node with an XDP program on ext0,
/// with the kernel's run statistics on: the program's own time a frame
/// (`program_time`), beside the rates measured without them.
fn program_times(
    section: &mut Section,
    nodes: &[Node],
    generators: &[Vec<Generator>],
    services: usize,
    length: Duration,
) -> Result<()> {
    let stats = RunStats::on()?;
    for (node, per_case) in nodes.iter().zip(generators) {
        let Some(id) = xdp_program(node)? else {
            continue;
        };
        for (case, generator) in CASES.iter().zip(per_case) {
            let before = stats.read(id)?;
            generator.run(&client_netns(node.bed()), "eth0", length)?;
            let after = stats.read(id)?;
            if let Some(ns) = before.per_run_until(after) {
                section.figure(
                    &format!("{}: {}", program_time::FIGURE, case.name()),
                    node.subject(),
                    services,
                    "ns",
                    &[ns],
                );
            }
        }
    }
    Ok(())
}

fn measure(node: &Node, generator: &Generator, length: Duration) -> Result<Sample> {
    let before = counters(node)?;
    let sent = generator.run(&client_netns(node.bed()), "eth0", length)?;
    // Frames still in queues land within milliseconds.
    thread::sleep(Duration::from_millis(100));
    let after = counters(node)?;
    Ok(Sample {
        sent,
        delta: Counters {
            at_pods: after.at_pods - before.at_pods,
            at_ext0: after.at_ext0 - before.at_ext0,
            dnat_new: after.dnat_new - before.dnat_new,
            dnat_established: after.dnat_established - before.dnat_established,
            xdp_redirected: after.xdp_redirected - before.xdp_redirected,
            conntrack: after.conntrack,
            agent_cpu_ms: after.agent_cpu_ms - before.agent_cpu_ms,
        },
    })
}

/// The frames of `case` toward `node`'s destination.
fn frame_spec(node: &Node, case: Case) -> Result<FrameSpec> {
    let bed = node.bed();
    let (dst_base, dst_count, dport) = node.destination();
    let (src_mask, sport_mask) = match case {
        Case::NewFlows => (0xffff, 0x7fff),
        Case::Established => (0, 63),
    };
    Ok(FrameSpec {
        src_mac: mac(&bed.client_ns(), "eth0")?,
        dst_mac: mac(&bed.node_ns(), EXTERNAL_DEVICE)?,
        src_base: Ipv4Addr::new(10, 128, 0, 0),
        src_mask,
        sport_base: 0x8000,
        sport_mask,
        dst_base,
        dst_count,
        dport,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(frames: u64, at_pods: u64, new: u64, established: u64) -> Sample {
        Sample {
            sent: Sent {
                frames,
                elapsed: Duration::from_secs(2),
            },
            delta: Counters {
                at_pods,
                dnat_new: new,
                dnat_established: established,
                ..Counters::default()
            },
        }
    }

    #[test]
    fn a_sample_needs_frames_at_the_pods() {
        assert!(
            sample(1_000_000, 5, 0, 0)
                .unproven(SUBJECTS[1], Case::NewFlows)
                .is_some()
        );
        assert!(
            sample(1_000_000, 400_000, 0, 0)
                .unproven(SUBJECTS[1], Case::NewFlows)
                .is_none()
        );
        assert_eq!(sample(1_000_000, 400_000, 0, 0).delivered_rate(), 200_000.0);
    }

    #[test]
    fn lb_samples_need_its_translations_of_the_right_kind() {
        let lb = SUBJECTS[0];
        assert!(
            sample(1_000, 500, 0, 0)
                .unproven(lb, Case::NewFlows)
                .is_some()
        );
        assert!(
            sample(1_000, 500, 500, 0)
                .unproven(lb, Case::NewFlows)
                .is_none()
        );
        assert!(
            sample(1_000, 500, 500, 0)
                .unproven(lb, Case::Established)
                .is_some()
        );
        assert!(
            sample(1_000, 500, 64, 436)
                .unproven(lb, Case::Established)
                .is_none()
        );
    }
}
