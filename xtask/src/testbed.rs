//! A node, its pods and an external client, in network namespaces of their
//! own, for the demo and the end-to-end tests.
//!
//! ```text
//!  client ns               node ns (agent, XDP + tc on ext0)           pod ns (x N)
//!  eth0 198.51.100.2 ---- ext0 198.51.100.1    br0 203.0.113.1 ---- eth0 203.0.113.1N
//! ```
//!
//! [`Testbed::routed`] wires the pods as Calico and Cilium do instead: no
//! bridge, each pod's veth routed by a /32 (`commands::routed_pod`).
//!
//! Everything lives inside namespaces this process creates: no veth end in
//! the machine's own namespace and no route out, so an untranslated packet
//! can never leave the machine. The socket hooks attach to a cgroup made
//! for the purpose, never to the machine's root cgroup. `Drop` removes the
//! namespaces, the cgroup, the bpffs pins and every process it started,
//! also when a test fails.

use std::{
    fs,
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

mod commands;
mod remote_node;
pub use commands::run;
use commands::{bridged_pod, ethtool_tx_off, ip, routed_pod, sysctl};
pub use remote_node::{
    NODE_LINK_ADDR, NODE_LINK_DEVICE, REMOTE_NODE_ADDR, REMOTE_NODE_NAME, REMOTE_POD_SUBNET,
    remote_pod_addr, remote_pod_name,
};

pub const NODE_NAME: &str = "node-a";
pub const NODE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The node's bridge to its pods (what `--pod-device` names).
pub const POD_BRIDGE: &str = "br0";
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// Service frontends (ClusterIPs, LoadBalancer and external IPs) live here;
/// the client routes it through the node.
pub const SERVICE_RANGE: &str = "192.0.2.0/24";
pub const POD_TCP_PORT: u16 = 8080;
pub const POD_UDP_PORT: u16 = 5353;
/// The device the agent serves external traffic on.
pub const EXTERNAL_DEVICE: &str = "ext0";

pub fn pod_addr(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, 11 + index as u8)
}

pub fn pod_name(index: usize) -> String {
    format!("pod-{}", index + 1)
}

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Testbed {
    /// Unique per testbed: names namespaces, the cgroup and the pin dir.
    pub prefix: String,
    pub pods: usize,
    /// Pods on the second node (none: no second node).
    pub remote_pods: usize,
    /// Pod servers answer `NAME from ADDR` (the source they saw).
    pub tell_peer: bool,
    /// Pods on routed veths, not on the bridge ([`Testbed::routed`]).
    pub routed: bool,
    pub cgroup: PathBuf,
    pub pin_dir: PathBuf,
    namespaces: Vec<String>,
    children: Vec<Child>,
    /// The XDP_PASS links on the peers of the node's external veths, the
    /// client's and node-b's (detached when dropped).
    peer_xdp: Vec<OwnedFd>,
}

impl Testbed {
    /// Builds the topology with `pods` pods (at most 200).
    pub fn new(pods: usize) -> Result<Testbed> {
        Self::with_remote_node(pods, 0)
    }

    /// [`Testbed::new`] with each pod on a veth of its own, routed by a /32
    /// and with GRO on at the pod's end (so its veth takes frames
    /// redirected from XDP), as routed CNIs wire pods.
    pub fn routed(pods: usize) -> Result<Testbed> {
        Self::build_new(pods, 0, true)
    }

    /// [`Testbed::new`] and a second node with `remote_pods` pods (none:
    /// no second node); the pod servers of both then tell the source they
    /// saw.
    pub fn with_remote_node(pods: usize, remote_pods: usize) -> Result<Testbed> {
        Self::build_new(pods, remote_pods, false)
    }

    fn build_new(pods: usize, remote_pods: usize, routed: bool) -> Result<Testbed> {
        let prefix = format!(
            "lbt{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let cgroup = cgroup2_mount()?.join(&prefix);
        let mut bed = Testbed {
            pin_dir: Path::new("/sys/fs/bpf").join(&prefix),
            cgroup,
            prefix,
            pods,
            remote_pods,
            tell_peer: remote_pods > 0,
            routed,
            namespaces: Vec::new(),
            children: Vec::new(),
            peer_xdp: Vec::new(),
        };
        bed.build()
            .with_context(|| format!("building testbed {}", bed.prefix))?;
        Ok(bed)
    }

    pub fn netns_path(&self, ns: &str) -> PathBuf {
        Path::new("/var/run/netns").join(ns)
    }

    pub fn client_ns(&self) -> String {
        format!("{}-client", self.prefix)
    }

    pub fn node_ns(&self) -> String {
        format!("{}-node", self.prefix)
    }

    pub fn pod_ns(&self, index: usize) -> String {
        format!("{}-pod{}", self.prefix, index + 1)
    }

    fn build(&mut self) -> Result<()> {
        let (client, node) = (self.client_ns(), self.node_ns());
        let pods: Vec<String> = (0..self.pods).map(|i| self.pod_ns(i)).collect();
        for ns in [client.clone(), node.clone()].into_iter().chain(pods) {
            self.add_namespace(&ns)?;
        }
        fs::create_dir(&self.cgroup)
            .with_context(|| format!("creating cgroup {}", self.cgroup.display()))?;

        // External client <-> node.
        ip(&[
            "-n",
            &client,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            EXTERNAL_DEVICE,
            "netns",
            &node,
        ])?;
        ip(&[
            "-n",
            &client,
            "addr",
            "add",
            &format!("{CLIENT_ADDR}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &client, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            &client,
            "route",
            "add",
            SERVICE_RANGE,
            "via",
            &NODE_ADDR.to_string(),
        ])?;
        ip(&[
            "-n",
            &node,
            "addr",
            "add",
            &format!("{NODE_ADDR}/24"),
            "dev",
            EXTERNAL_DEVICE,
        ])?;
        ip(&["-n", &node, "link", "set", EXTERNAL_DEVICE, "up"])?;

        if self.routed {
            for i in 0..self.pods {
                routed_pod(&self.pod_ns(i), &node, i, pod_addr(i), POD_GATEWAY)?;
            }
        } else {
            self.bridged_pods(&node)?;
        }
        ethtool_tx_off(&client)?;
        // A veth only delivers XDP_TX frames (the datapath's ICMP rejects)
        // promptly when its peer runs XDP itself, as a real NIC transmits
        // them on its own: give the client's end a program that passes all.
        self.peer_xdp
            .push(crate::xdp_pass::attach(&self.netns_path(&client), "eth0")?);
        sysctl(&node, "net.ipv4.ip_forward", "1")?;
        sysctl(&node, "net.ipv4.conf.all.rp_filter", "0")?;
        if self.remote_pods > 0 {
            self.build_remote_node()?;
        }
        Ok(())
    }

    /// The node's bridge and the pods on it.
    fn bridged_pods(&self, node: &str) -> Result<()> {
        ip(&["-n", node, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            node,
            "addr",
            "add",
            &format!("{POD_GATEWAY}/24"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", node, "link", "set", "br0", "up"])?;
        for i in 0..self.pods {
            bridged_pod(&self.pod_ns(i), node, i, pod_addr(i), POD_GATEWAY)?;
        }
        Ok(())
    }

    fn add_namespace(&mut self, ns: &str) -> Result<()> {
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_string());
        // IPv4 only: no IPv6 link-local chatter on the test links.
        sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
        sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")?;
        ip(&["-n", ns, "link", "set", "lo", "up"])
    }

    /// Starts an `lb-probe` server in every pod, answering with the pod's name.
    /// (Also in every pod of the second node.)
    pub fn start_pod_servers(&mut self, probe: &Path) -> Result<()> {
        let local = (0..self.pods).map(|i| (self.pod_ns(i), pod_name(i)));
        let remote = (0..self.remote_pods).map(|i| (self.remote_pod_ns(i), remote_pod_name(i)));
        let pods: Vec<(String, String)> = local.chain(remote).collect();
        for (ns, name) in pods {
            let mut cmd = Command::new(probe);
            cmd.arg("--netns")
                .arg(self.netns_path(&ns))
                .args(["serve", "--name", &name])
                .args([
                    "--tcp",
                    &POD_TCP_PORT.to_string(),
                    "--udp",
                    &POD_UDP_PORT.to_string(),
                ]);
            if self.tell_peer {
                cmd.arg("--tell-peer");
            }
            let mut child = cmd
                .stdout(Stdio::piped())
                .spawn()
                .context("starting lb-probe serve")?;
            let stdout = child.stdout.take().context("probe stdout")?;
            self.children.push(child);
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line)?;
            if line.trim() != "ready" {
                bail!("pod server {name} did not start");
            }
        }
        Ok(())
    }

    /// The command line that runs the agent inside the node namespace.
    /// `nsenter` (unlike `ip netns exec`) keeps bpffs and the cgroup mount visible.
    pub fn agent_command(&self, lb: &Path, manifests: &Path) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!(
            "--net={}",
            self.netns_path(&self.node_ns()).display()
        ))
        .arg(lb)
        .arg("agent")
        .arg("--manifests")
        .arg(manifests)
        .args(["--device", EXTERNAL_DEVICE, "--node-name", NODE_NAME])
        .args(["--node-address", &NODE_ADDR.to_string()])
        .arg("--cgroup")
        .arg(&self.cgroup)
        .arg("--pin-dir")
        .arg(&self.pin_dir);
        cmd
    }

    /// An `lb-probe` command run from the external client.
    pub fn from_client(&self, probe: &Path) -> Command {
        let mut cmd = Command::new(probe);
        cmd.arg("--netns").arg(self.netns_path(&self.client_ns()));
        cmd
    }

    /// An `lb-probe` command run from pod `index`, inside the hooked cgroup.
    pub fn from_pod(&self, probe: &Path, index: usize) -> Command {
        let mut cmd = Command::new(probe);
        cmd.arg("--netns")
            .arg(self.netns_path(&self.pod_ns(index)))
            .arg("--cgroup")
            .arg(&self.cgroup);
        cmd
    }

    /// Keeps a process to be killed when the testbed goes.
    pub fn adopt(&mut self, child: Child) {
        self.children.push(child);
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_cgroup_members(&self.cgroup);
        // Unpinning the links detaches the programs; then the maps go.
        let _ = fs::remove_dir_all(&self.pin_dir);
        for ns in self.namespaces.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.cgroup.exists()
            && fs::remove_dir(&self.cgroup).is_err()
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn kill_cgroup_members(cgroup: &Path) {
    // Only processes this testbed started can be in its cgroup.
    if let Ok(procs) = fs::read_to_string(cgroup.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: plain syscall.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Where cgroup v2 is mounted (on this machine `/sys/fs/cgroup/unified`).
pub fn cgroup2_mount() -> Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts")?;
    mounts
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, path, kind) = (fields.next()?, fields.next()?, fields.next()?);
            (kind == "cgroup2").then(|| PathBuf::from(path))
        })
        .context("no cgroup v2 mount: run `cargo xtask setup`")
}
