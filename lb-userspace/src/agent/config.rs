//! What the agent is told to do, from the command line.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::{desired::Rules, model::NodeFacts, source::Limits};

/// Everything the agent needs to run.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Standalone mode's source: a directory of manifests.
    pub manifests: PathBuf,
    /// What one manifest file may cost.
    pub limits: Limits,
    /// Where the status for `lb status` is written.
    pub state_dir: PathBuf,
    /// The Prometheus endpoint; none: no endpoint.
    pub metrics_address: Option<SocketAddr>,
    /// External devices (XDP ingress, tc egress).
    pub devices: Vec<String>,
    pub xdp_generic: bool,
    pub node: NodeFacts,
    /// The cluster's settings that decide which Services are valid.
    pub rules: Rules,
    /// cgroup v2 directory for the socket hooks; none: north-south only.
    pub cgroup: Option<PathBuf>,
    pub pin_dir: PathBuf,
    pub max_tables: u32,
    /// How often everything is re-read and re-planned, to repair drift.
    pub resync: Duration,
    pub dry_run: bool,
    /// Log each verdict from the datapath (aya-log), for debugging.
    pub bpf_log: bool,
}
