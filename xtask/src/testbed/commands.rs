//! The commands the testbed is built with (`ip`, `sysctl`, `ethtool`), and
//! a pod's wiring to its node's bridge.

use std::{
    net::Ipv4Addr,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

/// Pod `index` of a node: namespace `pod` with `eth0` at `addr`/24 and a
/// default route via `gateway`, its veth peer `veth<index+1>` in the node's
/// namespace `node`, on the node's bridge `br0`.
pub(super) fn bridged_pod(
    pod: &str,
    node: &str,
    index: usize,
    addr: Ipv4Addr,
    gateway: Ipv4Addr,
) -> Result<()> {
    let host_end = pod_veth(pod, node, index, &format!("{addr}/24"))?;
    ip(&[
        "-n",
        pod,
        "route",
        "add",
        "default",
        "via",
        &gateway.to_string(),
    ])?;
    ip(&["-n", node, "link", "set", &host_end, "master", "br0", "up"])?;
    // Locally generated TCP on a veth carries a partial checksum that XDP
    // cannot see; real NICs hand XDP complete ones.
    ethtool_tx_off(pod)
}

/// Pod `index`'s veth: `eth0` in `pod` at `cidr` and up, its peer
/// `veth<index+1>` in `node` (returned, still down).
fn pod_veth(pod: &str, node: &str, index: usize, cidr: &str) -> Result<String> {
    let host_end = format!("veth{}", index + 1);
    ip(&[
        "-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", &host_end, "netns", node,
    ])?;
    ip(&["-n", pod, "addr", "add", cidr, "dev", "eth0"])?;
    ip(&["-n", pod, "link", "set", "eth0", "up"])?;
    Ok(host_end)
}

pub(super) fn ip(args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(args))
}

pub(super) fn sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    run(Command::new("ip").args([
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        &format!("{key}={value}"),
    ]))
}

pub(super) fn ethtool_tx_off(ns: &str) -> Result<()> {
    run(Command::new("ip")
        .args(["netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off"])
        .stdout(Stdio::null()))
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let output = cmd
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !output.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Pod `index` of a node wired as routed CNIs do (Calico, Cilium): `eth0`
/// at `addr`/32 in namespace `pod`, its default route via `gateway` on the
/// link, and its veth peer `veth<index+1>` in the node's namespace `node`
/// with no address, the pod routed to it by a /32. Both neighbours are
/// permanent (the node's is what a CNI's proxy ARP would answer), and GRO
/// is on at the pod's end: its veth then runs NAPI and takes frames
/// redirected from XDP.
pub(super) fn routed_pod(
    pod: &str,
    node: &str,
    index: usize,
    addr: Ipv4Addr,
    gateway: Ipv4Addr,
) -> Result<()> {
    let host_end = pod_veth(pod, node, index, &format!("{addr}/32"))?;
    let (addr, gateway) = (addr.to_string(), gateway.to_string());
    ip(&["-n", node, "link", "set", &host_end, "up"])?;
    ip(&[
        "-n", pod, "route", "add", &gateway, "dev", "eth0", "scope", "link",
    ])?;
    ip(&[
        "-n", pod, "route", "add", "default", "via", &gateway, "dev", "eth0",
    ])?;
    let host_mac = link_mac(node, &host_end)?;
    let pod_mac = link_mac(pod, "eth0")?;
    ip(&[
        "-n",
        pod,
        "neigh",
        "replace",
        &gateway,
        "lladdr",
        &host_mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])?;
    ip(&[
        "-n",
        node,
        "route",
        "add",
        &format!("{addr}/32"),
        "dev",
        &host_end,
    ])?;
    ip(&[
        "-n",
        node,
        "neigh",
        "replace",
        &addr,
        "lladdr",
        &pod_mac,
        "dev",
        &host_end,
        "nud",
        "permanent",
    ])?;
    run(Command::new("ip")
        .args(["netns", "exec", pod, "ethtool", "-K", "eth0", "gro", "on"])
        .stdout(Stdio::null()))?;
    ethtool_tx_off(pod)
}

/// The MAC address of `dev` in namespace `ns`.
fn link_mac(ns: &str, dev: &str) -> Result<String> {
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "cat",
            &format!("/sys/class/net/{dev}/address"),
        ])
        .output()
        .with_context(|| format!("reading {dev}'s MAC in {ns}"))?;
    if !output.status.success() {
        bail!(
            "reading {dev}'s MAC in {ns}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}
