//! Section 2: throughput through the namespace topology. The bench's
//! live-frames generator sends UDP from the client's veth to the target's
//! NodePort (198.51.100.1:30053, UDP 5353 on the pods) and the frames that
//! reach the pods are counted, for lb (the real agent), kube-proxy's
//! iptables and nftables rules on the same topology (no agent), and plain
//! forwarding (no rules, straight to the pods' addresses).
//!
//! Two cases: new flows (every frame a new 5-tuple, so lb's flow-table
//! inserts and conntrack's inserts are what is compared) and established
//! flows (64 fixed 5-tuples). The delivered rate is the figure; a sample
//! counts only with its proof (frames at the pods, and lb's own DNAT
//! counters for lb), and a subject without proof has no figure, only a note.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use lb::datapath::KernelMaps;
use lb_common::reason::Reason;
use xtask::testbed::{EXTERNAL_DEVICE, NODE_ADDR, POD_UDP_PORT, Testbed, pod_addr};

use crate::{
    BenchOptions,
    fixture::{AgentUnderTest, PODS, TARGET_UDP_NODE_PORT, max_services},
    kube_proxy_mode::{NodeRules, RulesNode},
    live_frames::{FrameSpec, Generator, Sent},
    report::Section,
};

const SUBJECTS: [&str; 4] = [
    "lb",
    "iptables (kube-proxy)",
    "nftables (kube-proxy)",
    "plain forwarding",
];

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

/// One node under test: the agent, or the testbed with kube-proxy's rules
/// or none.
enum Node {
    Lb(AgentUnderTest),
    Rules(RulesNode),
}

impl Node {
    fn bed(&self) -> &Testbed {
        match self {
            Node::Lb(aut) => &aut.bed,
            Node::Rules(node) => &node.bed,
        }
    }

    fn subject(&self) -> &'static str {
        match self {
            Node::Lb(_) => SUBJECTS[0],
            Node::Rules(node) => match node.rules {
                NodeRules::Iptables => SUBJECTS[1],
                NodeRules::Nftables => SUBJECTS[2],
                NodeRules::Plain => SUBJECTS[3],
            },
        }
    }

    /// Destination base, how many addresses from it, and port.
    fn destination(&self) -> (Ipv4Addr, u32, u16) {
        match self {
            Node::Rules(node) if node.rules == NodeRules::Plain => {
                (pod_addr(0), PODS as u32, POD_UDP_PORT)
            }
            _ => (NODE_ADDR, 1, TARGET_UDP_NODE_PORT),
        }
    }
}

/// Counters read before and after a run.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    at_pods: u64,
    at_ext0: u64,
    dnat_new: u64,
    dnat_established: u64,
    conntrack: u64,
}

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
                ", dnat_new +{}, dnat_established +{}",
                d.dnat_new, d.dnat_established
            );
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
         rate is what the generator sent. Subjects: lb (the real agent), kube-proxy's iptables \
         and nftables rules for the same Services loaded in the node's namespace with no agent \
         (conntrack and NAT do the work), and plain forwarding (no rules; the frames go to the \
         pods' addresses and the node routes them). Runs are interleaved per repetition; the \
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
         runs NAPI (an XDP program or GRO; design.md section 8). The stateless XDP DNAT \
         subject is not measured here (its program lives on another branch).",
    );
    Ok(section)
}

/// 1, 1,000 and 10,000 Services; `--quick` only proves every subject
/// works, at one Service (four testbeds per count are its cost).
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
        "bench: throughput: four nodes at {services} Services ready in {:.1} s",
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

/// The four nodes, built side by side: most of their setup is waiting on
/// one process each (the agent's first sync, a rule load).
fn start_nodes(services: usize) -> Result<Vec<Node>> {
    thread::scope(|scope| {
        let lb = scope.spawn(|| AgentUnderTest::start(services).map(Node::Lb));
        let rules = [NodeRules::Iptables, NodeRules::Nftables, NodeRules::Plain]
            .map(|rules| scope.spawn(move || RulesNode::start(rules, services).map(Node::Rules)));
        // Join all before failing, so every built node is dropped (and
        // cleaned up) here rather than left behind.
        let joined: Vec<Result<Node>> = std::iter::once(lb)
            .chain(rules)
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a node's setup panicked")))
            })
            .collect();
        joined.into_iter().collect()
    })
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
            conntrack: after.conntrack,
        },
    })
}

fn counters(node: &Node) -> Result<Counters> {
    let bed = node.bed();
    let mut counters = Counters::default();
    for pod in 0..PODS {
        counters.at_pods += rx_packets(&bed.pod_ns(pod), "eth0")?;
    }
    counters.at_ext0 = rx_packets(&bed.node_ns(), EXTERNAL_DEVICE)?;
    if let Node::Lb(aut) = node {
        let maps =
            KernelMaps::open_pinned(&aut.bed.pin_dir).context("opening the agent's pinned maps")?;
        counters.dnat_new = maps.stat(Reason::DnatNew)?;
        counters.dnat_established = maps.stat(Reason::DnatEstablished)?;
    } else {
        counters.conntrack = conntrack_count(bed).unwrap_or(0);
    }
    Ok(counters)
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

/// GRO on ext0 (so the client's veth takes XDP_TX'd frames without an
/// XDP program on ext0), and no reverse-path filter for the generator's
/// sources (the node has no route back to them, by design).
fn prepare(bed: &Testbed) -> Result<()> {
    let node = bed.node_ns();
    xtask::testbed::run(Command::new("ip").args([
        "netns",
        "exec",
        &node,
        "ethtool",
        "-K",
        EXTERNAL_DEVICE,
        "gro",
        "on",
    ]))?;
    xtask::testbed::run(Command::new("ip").args([
        "netns",
        "exec",
        &node,
        "sysctl",
        "-qw",
        &format!("net.ipv4.conf.{EXTERNAL_DEVICE}.rp_filter=0"),
    ]))
}

fn client_netns(bed: &Testbed) -> PathBuf {
    bed.netns_path(&bed.client_ns())
}

fn link_json(ns: &str, dev: &str) -> Result<serde_json::Value> {
    let out = Command::new("ip")
        .args(["-n", ns, "-s", "-j", "link", "show", "dev", dev])
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip -n {ns} link show {dev}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let links: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    links
        .get(0)
        .cloned()
        .with_context(|| format!("no link {dev} in {ns}"))
}

fn rx_packets(ns: &str, dev: &str) -> Result<u64> {
    link_json(ns, dev)?
        .pointer("/stats64/rx/packets")
        .and_then(serde_json::Value::as_u64)
        .with_context(|| format!("no rx packets for {dev} in {ns}"))
}

fn mac(ns: &str, dev: &str) -> Result<[u8; 6]> {
    let link = link_json(ns, dev)?;
    let text = link
        .get("address")
        .and_then(serde_json::Value::as_str)
        .with_context(|| format!("no address for {dev} in {ns}"))?;
    parse_mac(text).with_context(|| format!("bad MAC {text:?} of {dev} in {ns}"))
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// conntrack's entries in the node's namespace (per namespace).
fn conntrack_count(bed: &Testbed) -> Result<u64> {
    let out = Command::new("nsenter")
        .arg(format!(
            "--net={}",
            bed.netns_path(&bed.node_ns()).display()
        ))
        .args(["cat", "/proc/sys/net/netfilter/nf_conntrack_count"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
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

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("02:ab:00:00:10:ff"),
            Some([2, 0xab, 0, 0, 0x10, 0xff])
        );
        assert_eq!(parse_mac("02:ab:00"), None);
        assert_eq!(parse_mac("zz:ab:00:00:10:ff"), None);
    }
}
