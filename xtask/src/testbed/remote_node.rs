//! The testbed's optional second node: a namespace with pods of its own,
//! routed like a flat pod network (each node routes the other's pod subnet
//! via the other node's address on a shared link), with no agent on it.
//!
//! ```text
//!  node ns  nodes0 10.99.0.1 ---- eth0 10.99.0.2  node-b ns   br0 203.0.114.1 ---- eth0 203.0.114.1N  remote pods
//! ```
//!
//! node-b has no route to the external client's subnet: a remote pod's
//! reply that is not addressed to node-a (no masquerade) is dropped there,
//! as an external client drops a reply from an address it never spoke to.
//! It reaches node-a's own address (`NODE_ADDR`, its InternalIP, what
//! masquerade rewrites sources to) over the link, as nodes of a cluster
//! reach each other's addresses; the masqueraded replies then come back
//! through `NODE_LINK_DEVICE`, which the agent must attach to as well.

use std::net::Ipv4Addr;

use anyhow::Result;

use super::{Testbed, bridged_pod, ip, sysctl};

pub const REMOTE_NODE_NAME: &str = "node-b";
/// node-a's end of the link between the nodes.
pub const NODE_LINK_DEVICE: &str = "nodes0";
/// node-a's address on the link between the nodes.
pub const NODE_LINK_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// node-b's address on the same link.
pub const REMOTE_NODE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
pub const REMOTE_POD_SUBNET: &str = "203.0.114.0/24";
const REMOTE_POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(203, 0, 114, 1);
const LOCAL_POD_SUBNET: &str = "203.0.113.0/24";

pub fn remote_pod_addr(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 114, 11 + index as u8)
}

pub fn remote_pod_name(index: usize) -> String {
    format!("remote-pod-{}", index + 1)
}

impl Testbed {
    pub fn remote_node_ns(&self) -> String {
        format!("{}-nodeb", self.prefix)
    }

    pub fn remote_pod_ns(&self, index: usize) -> String {
        format!("{}-rpod{}", self.prefix, index + 1)
    }

    /// Builds node-b and its pods, and the routes between the two nodes.
    pub(super) fn build_remote_node(&mut self) -> Result<()> {
        let (node, remote) = (self.node_ns(), self.remote_node_ns());
        let pods: Vec<String> = (0..self.remote_pods)
            .map(|i| self.remote_pod_ns(i))
            .collect();
        for ns in std::iter::once(remote.clone()).chain(pods) {
            self.add_namespace(&ns)?;
        }
        ip(&[
            "-n",
            &node,
            "link",
            "add",
            NODE_LINK_DEVICE,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &remote,
        ])?;
        let address = |ns: &str, addr: String, dev: &str| -> Result<()> {
            ip(&["-n", ns, "addr", "add", &addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])
        };
        address(&node, format!("{NODE_LINK_ADDR}/24"), NODE_LINK_DEVICE)?;
        address(&remote, format!("{REMOTE_NODE_ADDR}/24"), "eth0")?;
        ip(&[
            "-n",
            &node,
            "route",
            "add",
            REMOTE_POD_SUBNET,
            "via",
            &REMOTE_NODE_ADDR.to_string(),
        ])?;
        ip(&[
            "-n",
            &remote,
            "route",
            "add",
            LOCAL_POD_SUBNET,
            "via",
            &NODE_LINK_ADDR.to_string(),
        ])?;
        ip(&[
            "-n",
            &remote,
            "route",
            "add",
            &format!("{}/32", super::NODE_ADDR),
            "via",
            &NODE_LINK_ADDR.to_string(),
        ])?;
        ip(&["-n", &remote, "link", "add", "br0", "type", "bridge"])?;
        address(&remote, format!("{REMOTE_POD_GATEWAY}/24"), "br0")?;
        for i in 0..self.remote_pods {
            bridged_pod(
                &self.remote_pod_ns(i),
                &remote,
                i,
                remote_pod_addr(i),
                REMOTE_POD_GATEWAY,
            )?;
        }
        sysctl(&remote, "net.ipv4.ip_forward", "1")?;
        sysctl(&remote, "net.ipv4.conf.all.rp_filter", "0")?;
        // As on the client's end: a veth takes frames node-a forwards from
        // XDP (`--xdp-forward`) only when its peer runs XDP, as a NIC would.
        self.peer_xdp
            .push(crate::xdp_pass::attach(&self.netns_path(&remote), "eth0")?);
        Ok(())
    }
}
