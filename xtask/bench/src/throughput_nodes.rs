//! The six nodes the throughput section sends to, and the counters it
//! reads off them: the pods' interfaces, `ext0`, lb's DNAT counters, and
//! conntrack's entries where kube-proxy's rules run.

use std::{net::Ipv4Addr, path::PathBuf, process::Command, thread};

use anyhow::{Context, Result, bail};
use lb::datapath::KernelMaps;
use lb_common::{forward::ForwardOutcome, reason::Reason};
use xtask::testbed::{EXTERNAL_DEVICE, NODE_ADDR, POD_UDP_PORT, Testbed, pod_addr};

use crate::{
    fixture::{AgentUnderTest, PODS, TARGET_UDP_NODE_PORT},
    kube_proxy_mode::{NodeRules, RulesNode},
};

pub const SUBJECTS: [&str; 6] = [
    "lb",
    "iptables (kube-proxy)",
    "nftables (kube-proxy)",
    "plain forwarding",
    "stateless XDP DNAT (the limit)",
    "stateless XDP DNAT, redirecting (the ceiling)",
];

/// One node under test: the agent, or the testbed with kube-proxy's rules
/// or none.
pub enum Node {
    Lb(AgentUnderTest),
    Rules(RulesNode),
}

impl Node {
    pub fn bed(&self) -> &Testbed {
        match self {
            Node::Lb(aut) => &aut.bed,
            Node::Rules(node) => &node.bed,
        }
    }

    pub fn subject(&self) -> &'static str {
        match self {
            Node::Lb(_) => SUBJECTS[0],
            Node::Rules(node) => match node.rules {
                NodeRules::Iptables => SUBJECTS[1],
                NodeRules::Nftables => SUBJECTS[2],
                NodeRules::Plain => SUBJECTS[3],
                NodeRules::StatelessXdp => SUBJECTS[4],
                NodeRules::RedirectingXdp => SUBJECTS[5],
            },
        }
    }

    /// Destination base, how many addresses from it, and port.
    pub fn destination(&self) -> (Ipv4Addr, u32, u16) {
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
pub struct Counters {
    pub at_pods: u64,
    pub at_ext0: u64,
    pub dnat_new: u64,
    pub dnat_established: u64,
    /// lb's frames redirected from XDP (`--xdp-forward`: to the pods' veths).
    pub xdp_redirected: u64,
    pub conntrack: u64,
    /// CPU time the agent's process used (user and system), ms: its own
    /// work competes with the frames for this machine's two cores.
    pub agent_cpu_ms: u64,
}

/// The six nodes (four with `LB_BENCH_LB_ONLY=1`), built side by side: most of their setup is waiting on
/// one process each (the agent's first sync, a rule load).
pub fn start_nodes(services: usize) -> Result<Vec<Node>> {
    thread::scope(|scope| {
        // Every node's pods are routed veths (as Calico and Cilium wire
        // them), so lb's `--xdp-forward` can redirect to them as the
        // ceiling does; behind a bridge the FIB names the bridge, which
        // takes no redirected frames, and lb would pass them to the stack.
        let lb = scope
            .spawn(|| AgentUnderTest::start_routed(services, &["--xdp-forward"]).map(Node::Lb));
        // `LB_BENCH_LB_ONLY=1` leaves out kube-proxy's rules: loading
        // iptables' at 10,000 Services x 10 endpoints takes longer here
        // than the rest of the bench.
        let rules: Vec<NodeRules> = [
            NodeRules::Iptables,
            NodeRules::Nftables,
            NodeRules::Plain,
            NodeRules::StatelessXdp,
            NodeRules::RedirectingXdp,
        ]
        .into_iter()
        .filter(|rules| {
            !(crate::lb_only() && matches!(rules, NodeRules::Iptables | NodeRules::Nftables))
        })
        .collect();
        let rules: Vec<_> = rules
            .into_iter()
            .map(|rules| scope.spawn(move || RulesNode::start(rules, services).map(Node::Rules)))
            .collect();
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

pub fn counters(node: &Node) -> Result<Counters> {
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
        counters.xdp_redirected = maps
            .forward_stats()?
            .into_iter()
            .filter(|(outcome, _)| *outcome == ForwardOutcome::Redirected)
            .map(|(_, packets)| packets)
            .sum();
        if let Some(pid) = aut.pid() {
            counters.agent_cpu_ms = cpu_ms(pid)?;
        }
    } else {
        counters.conntrack = conntrack_count(bed).unwrap_or(0);
    }
    Ok(counters)
}

/// User and system CPU time of process `pid` so far, ms.
fn cpu_ms(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    cpu_ms_of(&stat).with_context(|| format!("no CPU times in /proc/{pid}/stat"))
}

/// `utime` and `stime` (fields 14 and 15, in clock ticks, counted after
/// the command name, which may hold spaces) of a `/proc/PID/stat` line.
fn cpu_ms_of(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let ticks: u64 = fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
    // SAFETY: a plain query.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1000 / per_second)
}

/// GRO on ext0 (so the client's veth takes XDP_TX'd frames without an
/// XDP program on ext0), and no reverse-path filter for the generator's
/// sources (the node has no route back to them, by design).
pub fn prepare(bed: &Testbed) -> Result<()> {
    let node = bed.node_ns();
    gro_on(&node, EXTERNAL_DEVICE)?;
    xtask::testbed::run(Command::new("ip").args([
        "netns",
        "exec",
        &node,
        "sysctl",
        "-qw",
        &format!("net.ipv4.conf.{EXTERNAL_DEVICE}.rp_filter=0"),
    ]))
}

/// GRO on `dev` in `ns`: its veth peer then runs NAPI and takes XDP_TX'd
/// and redirected frames (design.md section 8).
pub fn gro_on(ns: &str, dev: &str) -> Result<()> {
    xtask::testbed::run(
        Command::new("ip").args(["netns", "exec", ns, "ethtool", "-K", dev, "gro", "on"]),
    )
}

pub fn client_netns(bed: &Testbed) -> PathBuf {
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

pub fn rx_packets(ns: &str, dev: &str) -> Result<u64> {
    link_json(ns, dev)?
        .pointer("/stats64/rx/packets")
        .and_then(serde_json::Value::as_u64)
        .with_context(|| format!("no rx packets for {dev} in {ns}"))
}

/// The id of the XDP program on `node`'s `ext0`, if one is attached.
pub fn xdp_program(node: &Node) -> Result<Option<u32>> {
    let bed = node.bed();
    let link = link_json(&bed.node_ns(), EXTERNAL_DEVICE)?;
    Ok(crate::program_time::xdp_program_id(&link))
}

pub fn ifindex(ns: &str, dev: &str) -> Result<u32> {
    link_json(ns, dev)?
        .get("ifindex")
        .and_then(serde_json::Value::as_u64)
        .and_then(|index| u32::try_from(index).ok())
        .with_context(|| format!("no ifindex for {dev} in {ns}"))
}

pub fn mac(ns: &str, dev: &str) -> Result<[u8; 6]> {
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

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("02:ab:00:00:10:ff"),
            Some([2, 0xab, 0, 0, 0x10, 0xff])
        );
        assert_eq!(parse_mac("02:ab:00"), None);
        assert_eq!(parse_mac("zz:ab:00:00:10:ff"), None);
    }

    #[test]
    fn cpu_times_are_read_past_a_command_name_with_spaces() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime ...
        let stat = "42 (lb agent) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        // SAFETY: a plain query.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(cpu_ms_of(stat), Some(300 * 1000 / hz));
        assert_eq!(cpu_ms_of("42 (lb) S 1"), None);
    }
}
