//! The testbed without the agent, as kube-proxy would leave the node:
//! its iptables or nftables rules for the same Services loaded into the
//! node's namespace (conntrack and NAT do the work), or no rules at all
//! (plain forwarding, the kernel's own floor); or, as the limit, the
//! bench's minimal stateless XDP DNAT program on ext0 for the target's UDP
//! NodePort alone (no maps, no state, one pod), passing to the stack or,
//! as the ceiling, redirecting straight to the pod's veth.
//!
//! The rule generators speak TCP (the control-plane figures load them as
//! they are); the throughput section sends UDP to the target's NodePort
//! 30053, so the target's own rules are turned into its UDP port's rules
//! (port 53, NodePort 30053, pods on 5353), exactly what kube-proxy writes
//! for a UDP port. The fillers stay as they are: they only cost lookups.

use std::{net::SocketAddrV4, os::fd::OwnedFd, time::Duration};

use anyhow::{Context, Result};
use xtask::testbed::{EXTERNAL_DEVICE, NODE_ADDR, POD_TCP_PORT, POD_UDP_PORT, Testbed, pod_addr};

use crate::{
    fixture::{PODS, TARGET_TCP_NODE_PORT, TARGET_UDP_NODE_PORT, release_bin, service_shapes},
    kube_proxy_rules::{iptables_restore, nft_script},
    rule_loads::{CLUSTER_CIDR, run_in_netns},
    stateless_dnat::{self, RedirectTo, StatelessDnat},
    throughput_nodes::{gro_on, ifindex, mac},
};

/// What the node runs instead of lb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRules {
    Iptables,
    Nftables,
    /// No rules: the client sends to a pod address, the node routes.
    Plain,
    /// The bench's stateless XDP DNAT on ext0: the target's UDP NodePort
    /// to the first pod, XDP_PASS (the node routes).
    StatelessXdp,
    /// The same, redirected to the first pod's veth with its MAC: no
    /// forwarding path and no bridge (the first pod's eth0 gets GRO, so
    /// its veth takes redirected frames).
    RedirectingXdp,
}

/// The testbed (pods serving) with kube-proxy's rules, or none.
pub struct RulesNode {
    pub bed: Testbed,
    pub rules: NodeRules,
    /// The stateless DNAT's XDP link on ext0 (detached on drop, before the
    /// testbed goes).
    xdp_link: Option<OwnedFd>,
}

/// What the stateless XDP subject translates: the target's UDP NodePort on
/// the node's address to the first pod's UDP server.
pub fn stateless_target() -> StatelessDnat {
    StatelessDnat {
        tcp: false,
        frontend: SocketAddrV4::new(NODE_ADDR, TARGET_UDP_NODE_PORT),
        backend: SocketAddrV4::new(pod_addr(0), POD_UDP_PORT),
        redirect: None,
    }
}

/// The first pod's veth in the node's namespace (`routed_pod` names it),
/// and the MACs a frame redirected to it needs.
fn redirect_to_first_pod(bed: &Testbed) -> Result<RedirectTo> {
    let host_end = "veth1";
    Ok(RedirectTo {
        ifindex: ifindex(&bed.node_ns(), host_end)?,
        src_mac: mac(&bed.node_ns(), host_end)?,
        dst_mac: mac(&bed.pod_ns(0), "eth0")?,
    })
}

impl RulesNode {
    pub fn start(rules: NodeRules, services: usize) -> Result<RulesNode> {
        // Routed pods, as lb's node has (`throughput_nodes::start_nodes`).
        let mut bed = Testbed::routed(PODS)?;
        bed.start_pod_servers(&release_bin("lb-probe"))?;
        let mut node = RulesNode {
            bed,
            rules,
            xdp_link: None,
        };
        match rules {
            NodeRules::Iptables => node.load(
                "iptables-legacy-restore",
                &["--noflush"],
                &udp_target(&iptables_restore(&service_shapes(services), CLUSTER_CIDR)),
            )?,
            NodeRules::Nftables => node.load(
                "nft",
                &["-f", "-"],
                &udp_target(&nft_script(&service_shapes(services), CLUSTER_CIDR)),
            )?,
            NodeRules::Plain => {}
            NodeRules::StatelessXdp => node.attach_stateless_dnat(stateless_target())?,
            NodeRules::RedirectingXdp => {
                let redirect = redirect_to_first_pod(&node.bed)?;
                gro_on(&node.bed.pod_ns(0), "eth0")?;
                node.attach_stateless_dnat(StatelessDnat {
                    redirect: Some(redirect),
                    ..stateless_target()
                })?
            }
        }
        Ok(node)
    }

    /// Loads the stateless DNAT, proves it translates (crafted frames under
    /// BPF_PROG_TEST_RUN) and attaches it to the node's ext0.
    fn attach_stateless_dnat(&mut self, dnat: StatelessDnat) -> Result<()> {
        let program = dnat.load()?;
        stateless_dnat::check(&dnat, &program)?;
        let netns = self.bed.netns_path(&self.bed.node_ns());
        let link = xtask::xdp_pass::attach_fd(&netns, EXTERNAL_DEVICE, program.raw_fd())
            .context("attaching the stateless DNAT to the node's ext0")?;
        self.xdp_link = Some(link);
        Ok(())
    }

    fn load(&self, program: &str, args: &[&str], rules: &str) -> Result<()> {
        let netns = self.bed.netns_path(&self.bed.node_ns());
        run_in_netns(&netns, program, args, rules, Duration::MAX)
            .with_context(|| format!("loading kube-proxy's rules with {program}"))?;
        Ok(())
    }
}

/// The rules with the target Service's port made its UDP port: every line
/// naming the target or DNATing to one of its pods (the only endpoints on
/// 203.0.113.0/24) matches and translates UDP instead of TCP.
pub fn udp_target(rules: &str) -> String {
    let replacements: Vec<(String, String)> = [
        ("-m tcp -p tcp", "-m udp -p udp"),
        ("--dport 80 ", "--dport 53 "),
        ("tcp . 80 :", "udp . 53 :"),
        ("tcp dport 80 ", "udp dport 53 "),
        ("meta l4proto tcp dnat", "meta l4proto udp dnat"),
    ]
    .into_iter()
    .map(|(from, to)| (from.to_string(), to.to_string()))
    .chain([
        (
            format!("--dport {TARGET_TCP_NODE_PORT} "),
            format!("--dport {TARGET_UDP_NODE_PORT} "),
        ),
        (
            format!("tcp . {TARGET_TCP_NODE_PORT} :"),
            format!("udp . {TARGET_UDP_NODE_PORT} :"),
        ),
        (format!(":{POD_TCP_PORT}"), format!(":{POD_UDP_PORT}")),
    ])
    .collect();
    let mut out = String::with_capacity(rules.len());
    // nftables chains span lines: inside the target's, every line is its.
    let mut in_target_chain = false;
    for line in rules.split_inclusive('\n') {
        if line.trim_start().starts_with("chain ") {
            in_target_chain = line.contains("bench/target");
        }
        if in_target_chain
            || line.contains("bench/target")
            || line.contains("to 203.0.113.")
            || line.contains("to-destination 203.0.113.")
        {
            let mut line = line.to_string();
            for (from, to) in &replacements {
                line = line.replace(from.as_str(), to);
            }
            out.push_str(&line);
        } else {
            out.push_str(line);
        }
        if line.trim() == "}" {
            in_target_chain = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The target's rules match UDP 53 / NodePort 30053 and DNAT to the
    /// pods' UDP port; the fillers' rules are untouched.
    #[test]
    fn target_rules_become_udp_in_both_shapes() {
        for services in [1, 50, 2000] {
            let shapes = service_shapes(services);
            let iptables = udp_target(&iptables_restore(&shapes, CLUSTER_CIDR));
            assert!(iptables.contains("-m udp -p udp --dport 30053 -j KUBE-MARK-MASQ"));
            assert!(iptables.contains("-m udp -p udp -d 192.0.2.10/32 --dport 53 "));
            assert_eq!(
                iptables.matches("DNAT --to-destination 203.0.113.").count(),
                3
            );
            assert_eq!(
                iptables
                    .matches("-m udp -p udp -j DNAT --to-destination 203.0.113.1")
                    .count(),
                3
            );
            assert!(iptables.contains("203.0.113.11:5353"));
            assert!(!iptables.contains("30080"));
            let fillers = iptables.matches("-m tcp -p tcp -j DNAT").count();
            assert_eq!(
                fillers,
                (services - 1) * crate::fixture::filler_endpoints(services)
            );

            let nft = udp_target(&nft_script(&shapes, CLUSTER_CIDR));
            assert!(nft.contains("udp . 30053 : goto external-"));
            assert!(nft.contains("192.0.2.10 . udp . 53 : goto service-"));
            assert!(nft.contains("ip daddr 192.0.2.10 udp dport 53 "));
            assert_eq!(
                nft.matches("meta l4proto udp dnat to 203.0.113.1").count(),
                3
            );
            assert!(nft.contains("dnat to 203.0.113.13:5353"));
            assert!(!nft.contains("30080"));
        }
    }
}
