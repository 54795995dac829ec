//! `cargo xtask demo`: the demo's frontends, and its run over the
//! environment it shares with the end-to-end tests (`demo_env`).

use std::{fmt::Write as _, thread, time::Duration};

use anyhow::{Result, bail};

pub use crate::demo_env::{Chat, Env, exclusive_env, exclusive_env_with};
use crate::{testbed::NODE_ADDR, traffic::Tally};

/// Where a request is sent from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The external client, through the node's external device (XDP).
    Client,
    /// A pod on the node, through the socket hooks.
    Pod(usize),
}

#[derive(Clone, Copy, Debug)]
pub struct Frontend {
    pub label: &'static str,
    pub origin: Origin,
    pub udp: bool,
    pub addr: &'static str,
}

/// Every frontend of the demo manifests, from where users would use it.
pub const FRONTENDS: &[Frontend] = &[
    Frontend {
        label: "ClusterIP      web:http",
        origin: Origin::Pod(0),
        udp: false,
        addr: "192.0.2.10:80",
    },
    Frontend {
        label: "ClusterIP      web:dns",
        origin: Origin::Pod(0),
        udp: true,
        addr: "192.0.2.10:53",
    },
    Frontend {
        label: "NodePort       web-nodeport:http",
        origin: Origin::Client,
        udp: false,
        addr: "198.51.100.1:30080",
    },
    Frontend {
        label: "NodePort       web-nodeport:dns",
        origin: Origin::Client,
        udp: true,
        addr: "198.51.100.1:30053",
    },
    Frontend {
        label: "LoadBalancer   web-lb:http",
        origin: Origin::Client,
        udp: false,
        addr: "192.0.2.100:80",
    },
    Frontend {
        label: "externalIP     web:http",
        origin: Origin::Client,
        udp: false,
        addr: "192.0.2.200:80",
    },
    Frontend {
        label: "NodePort       (from a pod)",
        origin: Origin::Pod(1),
        udp: false,
        addr: "198.51.100.1:30080",
    },
    Frontend {
        label: "LoadBalancer   (from a pod)",
        origin: Origin::Pod(1),
        udp: false,
        addr: "192.0.2.100:80",
    },
];

pub const PODS: usize = 3;

pub fn demo() -> Result<()> {
    println!("Building a node with three pods and an external client in network namespaces...");
    let env = Env::start()?;
    println!(
        "Agent running on the node (manifests: deploy/examples/demo), XDP and tc on ext0, socket hooks on {}.",
        env.bed.cgroup.display()
    );
    println!(
        "Node address {NODE_ADDR}; pods pod-1..3 at 203.0.113.11-13 serve TCP 8080 and UDP 5353.\n"
    );
    let mut failed = Vec::new();
    round(&env, "All three pods are endpoints", &mut failed, 2)?;

    println!("Removing pod-3 from the EndpointSlices...");
    env.set_endpoints(&[0, 1])?;
    thread::sleep(Duration::from_secs(1));
    let after = round(&env, "pod-3 removed", &mut failed, 2)?;
    for tally in &after {
        if tally.answers.contains_key("pod-3") {
            failed.push("pod-3 still answered after its removal".to_string());
        }
    }
    if !failed.is_empty() {
        bail!(
            "demo failed:\n  {}\nagent log:\n{}",
            failed.join("\n  "),
            env.agent_log_text()
        );
    }
    println!(
        "Demo passed: every frontend spread over the pods, and traffic moved off pod-3 when it left."
    );
    Ok(())
}

/// One request round over every frontend, printed as a table.
fn round(env: &Env, title: &str, failed: &mut Vec<String>, min_pods: usize) -> Result<Vec<Tally>> {
    const COUNT: u32 = 30;
    let mut table = format!("{title}: {COUNT} requests per frontend\n");
    writeln!(
        table,
        "  {:<34} {:<24} {:>7} {:>7} {:>7} {:>7}",
        "frontend", "address", "pod-1", "pod-2", "pod-3", "failed"
    )?;
    let mut tallies = Vec::new();
    for frontend in FRONTENDS {
        let tally = env.request(frontend, COUNT)?;
        let proto = if frontend.udp { "udp" } else { "tcp" };
        let count = |pod: &str| tally.answers.get(pod).copied().unwrap_or(0);
        writeln!(
            table,
            "  {:<34} {:<24} {:>7} {:>7} {:>7} {:>7}",
            frontend.label,
            format!("{}/{proto}", frontend.addr),
            count("pod-1"),
            count("pod-2"),
            count("pod-3"),
            tally.errors.len()
        )?;
        if !tally.errors.is_empty() {
            failed.push(format!(
                "{} ({}): {} failed, first: {}",
                frontend.label,
                frontend.addr,
                tally.errors.len(),
                tally.errors[0]
            ));
        }
        if tally.pods_reached() < min_pods {
            failed.push(format!(
                "{} reached {} pod(s), fewer than {min_pods}",
                frontend.label,
                tally.pods_reached()
            ));
        }
        tallies.push(tally);
    }
    println!("{table}");
    Ok(tallies)
}
