//! kube-proxy's own rule shapes, generated for N Services, so the bench can
//! load them on the same topology and compare like with like.
//!
//! The shapes follow kube-proxy's proxiers (pkg/proxy/iptables and
//! pkg/proxy/nftables in kubernetes/kubernetes, and the expected rule dumps
//! in their proxier tests):
//!
//! - iptables: `KUBE-SERVICES` holds one rule per Service port that jumps
//!   to `KUBE-SVC-*`, which marks off-cluster sources for masquerade and
//!   picks an endpoint with `-m statistic --mode random --probability 1/k`
//!   (the last one unconditionally); each `KUBE-SEP-*` marks hairpin traffic
//!   and DNATs. `KUBE-SERVICES` is a linear list, which is why iptables mode
//!   slows down as Services grow: the bench's target Service goes last.
//! - nftables: a `service-ips` verdict map keyed by address . protocol .
//!   port, one `service-*` chain per Service port choosing its endpoint with
//!   `numgen random mod k vmap`, one `endpoint-*` chain per endpoint, and the
//!   `mark-for-masquerade` / `masquerading` pair.
//!
//! Chain names carry a hash of the Service port name as kube-proxy's do
//! (kube-proxy takes SHA-256 and base32; any stable hash gives the same
//! shape and the same lookup cost).

use std::{fmt::Write as _, net::Ipv4Addr};

/// One Service port and its endpoints, as both proxiers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceShape {
    /// `namespace/name:port`.
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

/// Above this many endpoints kube-proxy's iptables proxier enters "large
/// cluster mode" and leaves the per-endpoint comments out, which makes
/// `iptables-restore` much cheaper (`largeClusterEndpointsThreshold`).
const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// kube-proxy's masquerade mark (`--iptables-masquerade-bit`, default 14).
const MASQ_MARK: &str = "0x4000";

/// `count` filler Service ports with `endpoints` endpoints each, on
/// addresses no test topology routes (ClusterIPs in 10.96.0.0/12, endpoints
/// in 10.244.0.0/16), so they cost lookups but never match bench traffic.
pub fn filler_services(count: usize, endpoints: usize) -> Vec<ServiceShape> {
    (0..count)
        .map(|i| {
            let i = i as u32;
            ServiceShape {
                name: format!("bench/filler-{i}:http"),
                cluster_ip: Ipv4Addr::from(0x0a60_0000 + i + 1),
                port: 80,
                node_port: None,
                endpoints: (0..endpoints as u32)
                    .map(|e| (Ipv4Addr::from(0x0af4_0000 + i * 16 + e + 1), 8080))
                    .collect(),
            }
        })
        .collect()
}

/// A short, stable, upper-case tag for chain names (16 characters, as
/// kube-proxy's).
fn chain_tag(text: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut tag = String::with_capacity(16);
    for round in 0..2u8 {
        for byte in text.bytes().chain([round]) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut bits = hash;
        for _ in 0..8 {
            tag.push(ALPHABET[(bits & 31) as usize] as char);
            bits >>= 5;
        }
    }
    tag
}

/// kube-proxy's iptables `nat` table for `services`, as one
/// `iptables-restore` transaction (the way kube-proxy writes it).
/// `cluster_cidr` is the local-traffic detector's range.
pub fn iptables_restore(services: &[ServiceShape], cluster_cidr: &str) -> String {
    // The built-in chains are declared so the jumps into kube-proxy's
    // chains can go in the same transaction (kube-proxy adds them apart).
    let mut chains = String::from(
        ":PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n",
    );
    let mut rules = String::new();
    for base in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        let _ = writeln!(chains, ":{base} - [0:0]");
    }
    rules.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
    );
    let _ = writeln!(
        rules,
        "-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}"
    );
    let total_endpoints: usize = services.iter().map(|s| s.endpoints.len()).sum();
    let large_cluster = total_endpoints > LARGE_CLUSTER_ENDPOINTS;
    for svc in services {
        let svc_chain = format!("KUBE-SVC-{}", chain_tag(&svc.name));
        let _ = writeln!(chains, ":{svc_chain} - [0:0]");
        let matcher = format!(
            "-m comment --comment \"{} cluster IP\" -m tcp -p tcp -d {}/32 --dport {}",
            svc.name, svc.cluster_ip, svc.port
        );
        let _ = writeln!(rules, "-A KUBE-SERVICES {matcher} -j {svc_chain}");
        if let Some(node_port) = svc.node_port {
            let _ = writeln!(
                rules,
                "-A KUBE-NODEPORTS -m comment --comment {} -m tcp -p tcp --dport {node_port} -j KUBE-MARK-MASQ\n\
                 -A KUBE-NODEPORTS -m comment --comment {} -m tcp -p tcp --dport {node_port} -j {svc_chain}",
                svc.name, svc.name
            );
        }
        let _ = writeln!(
            rules,
            "-A {svc_chain} {matcher} ! -s {cluster_cidr} -j KUBE-MARK-MASQ"
        );
        let count = svc.endpoints.len();
        for (i, (addr, port)) in svc.endpoints.iter().enumerate() {
            let sep_chain = format!(
                "KUBE-SEP-{}",
                chain_tag(&format!("{}{addr}:{port}", svc.name))
            );
            let _ = writeln!(chains, ":{sep_chain} - [0:0]");
            let statistic = if i + 1 < count {
                format!(
                    " -m statistic --mode random --probability {:.10}",
                    1.0 / (count - i) as f64
                )
            } else {
                String::new()
            };
            let (to_endpoint, of_service) = if large_cluster {
                (String::new(), String::new())
            } else {
                (
                    format!(" -m comment --comment \"{} -> {addr}:{port}\"", svc.name),
                    format!(" -m comment --comment {}", svc.name),
                )
            };
            let _ = writeln!(
                rules,
                "-A {svc_chain}{to_endpoint}{statistic} -j {sep_chain}\n\
                 -A {sep_chain}{of_service} -s {addr}/32 -j KUBE-MARK-MASQ\n\
                 -A {sep_chain}{of_service} -m tcp -p tcp -j DNAT --to-destination {addr}:{port}"
            );
        }
    }
    rules.push_str(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" \
         -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
    );
    format!("*nat\n{chains}{rules}COMMIT\n")
}

/// kube-proxy's nftables table for `services`, as one `nft -f`
/// transaction (the table is deleted and re-created, so the script can be
/// loaded again).
pub fn nft_script(services: &[ServiceShape], cluster_cidr: &str) -> String {
    let mut out =
        String::from("table ip kube-proxy\ndelete table ip kube-proxy\ntable ip kube-proxy {\n");
    let mut chains = String::new();
    let mut service_ips = Vec::new();
    let mut node_ports = Vec::new();
    for svc in services {
        let id = format!("{}/tcp/{}", svc.name.replace(':', "/"), svc.port);
        let tag = &chain_tag(&svc.name)[..8];
        let svc_chain = format!("service-{tag}-{id}");
        service_ips.push(format!(
            "{} . tcp . {} : goto {svc_chain}",
            svc.cluster_ip, svc.port
        ));
        if let Some(node_port) = svc.node_port {
            let ext_chain = format!("external-{tag}-{id}");
            node_ports.push(format!("tcp . {node_port} : goto {ext_chain}"));
            let _ = writeln!(
                chains,
                "  chain {ext_chain} {{\n    jump mark-for-masquerade\n    goto {svc_chain}\n  }}"
            );
        }
        let mut vmap = Vec::new();
        for (i, (addr, port)) in svc.endpoints.iter().enumerate() {
            let ep_tag = &chain_tag(&format!("{}{addr}:{port}", svc.name))[..8];
            let ep_chain = format!("endpoint-{ep_tag}-{id}__{addr}/{port}");
            vmap.push(format!("{i} : goto {ep_chain}"));
            let _ = writeln!(
                chains,
                "  chain {ep_chain} {{\n    ip saddr {addr} jump mark-for-masquerade\n    meta l4proto tcp dnat to {addr}:{port}\n  }}"
            );
        }
        let _ = writeln!(
            chains,
            "  chain {svc_chain} {{\n    ip daddr {} tcp dport {} ip saddr != {cluster_cidr} jump mark-for-masquerade\n    numgen random mod {} vmap {{ {} }}\n  }}",
            svc.cluster_ip,
            svc.port,
            svc.endpoints.len().max(1),
            vmap.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "  map service-ips {{\n    type ipv4_addr . inet_proto . inet_service : verdict\n{}  }}",
        elements(&service_ips)
    );
    let _ = writeln!(
        out,
        "  map service-nodeports {{\n    type inet_proto . inet_service : verdict\n{}  }}",
        elements(&node_ports)
    );
    let _ = writeln!(
        out,
        "  chain nat-prerouting {{\n    type nat hook prerouting priority -100; policy accept;\n    jump services\n  }}\n\
         \x20 chain nat-output {{\n    type nat hook output priority -100; policy accept;\n    jump services\n  }}\n\
         \x20 chain nat-postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n    jump masquerading\n  }}\n\
         \x20 chain services {{\n    ip daddr . meta l4proto . th dport vmap @service-ips\n    fib daddr type local meta l4proto . th dport vmap @service-nodeports\n  }}\n\
         \x20 chain mark-for-masquerade {{\n    mark set mark or {MASQ_MARK}\n  }}\n\
         \x20 chain masquerading {{\n    mark and {MASQ_MARK} == 0 return\n    mark set mark xor {MASQ_MARK}\n    masquerade fully-random\n  }}"
    );
    out.push_str(&chains);
    out.push_str("}\n");
    out
}

fn elements(items: &[String]) -> String {
    if items.is_empty() {
        return String::new();
    }
    format!(
        "    elements = {{\n      {}\n    }}\n",
        items.join(",\n      ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> ServiceShape {
        ServiceShape {
            name: "default/web:http".into(),
            cluster_ip: Ipv4Addr::new(192, 0, 2, 10),
            port: 80,
            node_port: Some(30080),
            endpoints: vec![
                (Ipv4Addr::new(203, 0, 113, 11), 8080),
                (Ipv4Addr::new(203, 0, 113, 12), 8080),
                (Ipv4Addr::new(203, 0, 113, 13), 8080),
            ],
        }
    }

    /// kube-proxy's iptables proxier gives endpoint i of n the probability
    /// 1/(n-i) and the last one none (TestLoadBalancer's expected dump).
    #[test]
    fn iptables_probabilities_are_kube_proxys() {
        let text = iptables_restore(&[target()], "10.244.0.0/16");
        assert!(text.contains("--probability 0.3333333333 -j KUBE-SEP-"));
        assert!(text.contains("--probability 0.5000000000 -j KUBE-SEP-"));
        let last = text
            .lines()
            .find(|l| l.contains("-> 203.0.113.13:8080"))
            .expect("last endpoint rule");
        assert!(!last.contains("statistic"), "{last}");
        assert!(text.starts_with("*nat\n") && text.ends_with("COMMIT\n"));
    }

    /// The target goes last in KUBE-SERVICES, after every filler, and the
    /// nodeports jump closes the chain as kube-proxy requires.
    #[test]
    fn iptables_service_order_is_the_callers() {
        let mut services = filler_services(3, 2);
        services.push(target());
        let text = iptables_restore(&services, "10.244.0.0/16");
        let jumps: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES"))
            .collect();
        assert_eq!(jumps.len(), 5);
        assert!(jumps[3].contains("192.0.2.10/32"));
        assert!(jumps[4].contains("KUBE-NODEPORTS"));
        let sep_chains = text.lines().filter(|l| l.starts_with(":KUBE-SEP-")).count();
        assert_eq!(sep_chains, 3 * 2 + 3);
    }

    /// Past 1,000 endpoints the per-endpoint comments go, as kube-proxy's
    /// large cluster mode drops them; the Service-level ones stay.
    #[test]
    fn large_clusters_drop_endpoint_comments() {
        let small = iptables_restore(&filler_services(100, 10), "10.244.0.0/16");
        assert!(
            small
                .lines()
                .any(|l| l.starts_with("-A KUBE-SEP-") && l.contains("comment"))
        );
        let large = iptables_restore(&filler_services(101, 10), "10.244.0.0/16");
        assert!(
            !large
                .lines()
                .any(|l| l.starts_with("-A KUBE-SEP-") && l.contains("comment"))
        );
        assert!(
            large
                .lines()
                .any(|l| l.starts_with("-A KUBE-SERVICES") && l.contains("cluster IP"))
        );
    }

    #[test]
    fn nft_uses_verdict_maps_and_numgen() {
        let text = nft_script(&[target()], "10.244.0.0/16");
        assert!(text.contains("192.0.2.10 . tcp . 80 : goto service-"));
        assert!(text.contains("tcp . 30080 : goto external-"));
        assert!(text.contains("numgen random mod 3 vmap { 0 : goto endpoint-"));
        assert!(text.contains("meta l4proto tcp dnat to 203.0.113.12:8080"));
        assert!(text.contains("ip saddr != 10.244.0.0/16 jump mark-for-masquerade"));
    }

    #[test]
    fn chain_tags_are_stable_and_distinct() {
        assert_eq!(chain_tag("a/b:c"), chain_tag("a/b:c"));
        assert_ne!(chain_tag("a/b:c"), chain_tag("a/b:d"));
        assert_eq!(chain_tag("x").len(), 16);
        let fillers = filler_services(1000, 1);
        let tags: std::collections::BTreeSet<String> =
            fillers.iter().map(|s| chain_tag(&s.name)).collect();
        assert_eq!(tags.len(), 1000);
    }
}
