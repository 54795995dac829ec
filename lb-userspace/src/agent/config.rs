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
    /// kube-proxy's `--sync-period`: the longest time between syncs (the
    /// periodic resync re-reads the maps and repairs drift), the longest
    /// retry backoff, and half the health timeout.
    pub resync: Duration,
    /// kube-proxy's `--min-sync-period`: the shortest time between syncs;
    /// changes within it are coalesced.
    pub min_sync_period: Duration,
    /// `/healthz` and `/livez`; none: no endpoint.
    pub healthz_address: Option<SocketAddr>,
    pub dry_run: bool,
    /// Log each verdict from the datapath (aya-log), for debugging.
    pub bpf_log: bool,
    // connection table (issue 11)
    /// Entries of the connection table of assured flows (`--ct-entries`).
    pub ct_entries: u32,
    /// The flow hash's per-cluster seed (`--hash-seed`).
    pub hash_seed: u32,
    // snat
    /// Devices the node reaches its pods by (`--pod-device`): the hook
    /// translating local pods' masqueraded replies back attaches there.
    pub pod_devices: Vec<String>,
    // forwarding in XDP
    /// Forward translated packets from XDP by the external devices
    /// (`--xdp-forward`, `lb_common::forward`).
    pub xdp_forward: bool,
    // icmp errors and fragments
    /// Fragmented datagrams remembered at once (`--frag-entries`).
    pub frag_entries: u32,
    // tables (issue 13)
    /// Backends the datapath holds (`--max-backends`; `None`: the pinned
    /// size, else `lb_common::DEFAULT_MAX_BACKENDS`).
    pub max_backends: Option<u32>,
    // table sizes (issue 11)
    /// Socket translations remembered at once (`--sock-revnat-entries`).
    pub sock_revnat_entries: u32,
    /// Session-affinity clients remembered at once (`--affinity-entries`).
    pub affinity_entries: u32,
    // masquerade detector
    /// `--cluster-cidr` and `--masquerade-all`: kube-proxy's masquerade
    /// rules for ClusterIP traffic, written to the datapath at start.
    pub masquerade: super::masquerade_rules::MasqueradeConfig,
}

impl AgentConfig {
    /// `--pod-device auto`: the pod hook follows the local endpoints'
    /// devices (`pod_devices`).
    pub fn pod_devices_auto(&self) -> bool {
        self.pod_devices.iter().any(|d| d == super::devices::AUTO)
    }

    /// The pod devices named (not `auto`).
    pub fn named_pod_devices(&self) -> impl Iterator<Item = &String> {
        self.pod_devices
            .iter()
            .filter(|d| *d != super::devices::AUTO)
    }
}

/// A duration as kube-proxy's flags write them: a number and a unit (`ms`,
/// `s`, `m`, `h`), or several (`1m30s`); `0` alone is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let wrong = || {
        format!(
            "{text:?} is not a duration: write a number and a unit, such as 500ms, 1s, 30s or 1m30s"
        )
    };
    match text {
        "0" => return Ok(Duration::ZERO),
        "" => return Err(wrong()),
        _ => {}
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(wrong)?;
        let value: f64 = rest[..digits].parse().map_err(|_| wrong())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(wrong()),
        };
        total += Duration::try_from_secs_f64(seconds).map_err(|_| wrong())?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kube-proxy's flags are Go durations (`time.ParseDuration`).
    #[test]
    fn durations_read_as_kube_proxys_flags_write_them() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("1s"), Ok(ms(1000)));
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1.5h"), Ok(ms(5_400_000)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "30", "1x", "s", "-1s", "1s2"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("such as 500ms"), "{err}");
        }
    }
}
