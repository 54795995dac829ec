//! What the agent is told to do, from the command line.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::{
    desired::Rules,
    model::NodeFacts,
    source::{ClusterConfig, Limits},
};

/// Where the Services and EndpointSlices come from.
#[derive(Clone, Debug)]
pub enum SourceConfig {
    /// Standalone mode: a directory of manifests, and what one file may cost.
    Manifests { dir: PathBuf, limits: Limits },
    /// Cluster mode: the API server's reflectors.
    Cluster(ClusterConfig),
}

/// Everything the agent needs to run.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub source: SourceConfig,
    /// Where the status for `lb status` is written.
    pub state_dir: PathBuf,
    /// The Prometheus endpoint; none: no endpoint.
    pub metrics_address: Option<SocketAddr>,
    /// External devices (XDP ingress, tc egress).
    pub devices: Vec<String>,
    pub xdp_generic: bool,
    /// The node's facts when the source does not give them (standalone
    /// mode; in cluster mode the Node object's replace them).
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
