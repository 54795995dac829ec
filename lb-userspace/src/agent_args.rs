//! `lb agent`'s command line: which source, which node, which devices,
//! and the sync, health and metrics settings, made into an `AgentConfig`.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use anyhow::Result;
use lb::{
    agent::{AgentConfig, SourceConfig, config, masquerade_rules::MasqueradeConfig},
    desired::{Cidr, PortRange, Rules},
    source::{ClusterConfig, Limits, NodePortAddresses, cluster::selectors, node},
};

use crate::DEFAULT_PIN_DIR;
use crate::DEFAULT_STATE_DIR;

#[derive(clap::Args)]
pub struct AgentArgs {
    /// Standalone mode: a directory of Service and EndpointSlice YAML,
    /// applied again whenever a file in it changes. Without it: cluster
    /// mode, watching the API server.
    #[arg(long)]
    manifests: Option<PathBuf>,
    /// Cluster mode: the kubeconfig to reach the API server with (default:
    /// $KUBECONFIG, else ~/.kube/config, else the in-cluster service
    /// account, as kube-rs's Config::infer looks).
    #[arg(long, conflicts_with = "manifests")]
    kubeconfig: Option<PathBuf>,
    /// Serve only the Services labelled
    /// service.kubernetes.io/service-proxy-name=NAME (default: only those
    /// without the label, as kube-proxy).
    #[arg(long, value_name = "NAME")]
    service_proxy_name: Option<String>,
    /// Which local addresses NodePorts listen on, as kube-proxy's flag:
    /// CIDRs (repeatable or comma-separated) filter the node's interface
    /// addresses; `primary`: the node's primary IP from its Node object
    /// (cluster mode); default: every local address.
    #[arg(long, value_name = "CIDR|primary", value_delimiter = ',')]
    nodeport_addresses: Vec<String>,
    /// External device(s) for north-south traffic (XDP ingress, tc egress),
    /// repeatable or comma-separated; `auto`: the devices of this network
    /// namespace's IPv4 default routes, found at start.
    #[arg(long = "device", env = "LB_DEVICES", value_delimiter = ',')]
    devices: Vec<String>,
    /// Attach XDP in generic (skb) mode instead of the driver's native mode.
    #[arg(long)]
    xdp_generic: bool,
    /// This node's name, as EndpointSlices' nodeName and its Node object
    /// say it (default: hostname).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Standalone mode: addresses NodePorts listen on (default: every
    /// non-loopback IPv4 address of this network namespace). Cluster mode
    /// takes them from the interfaces, as --nodeport-addresses says.
    #[arg(long = "node-address")]
    node_addresses: Vec<IpAddr>,
    /// Standalone mode: this node's zone, for topology-aware routing (cluster
    /// mode reads the Node's topology.kubernetes.io/zone label).
    #[arg(long)]
    zone: Option<String>,
    /// The cluster's Service CIDR (the API server's and kube-proxy's
    /// --service-cluster-ip-range), repeatable: ClusterIPs outside every
    /// one are not served. Without it, ClusterIPs are not range-checked.
    #[arg(long = "service-cidr", value_name = "CIDR")]
    service_cidrs: Vec<Cidr>,
    /// The API server's --service-node-port-range: NodePorts outside it are
    /// not served (they could take a port the node itself listens on).
    #[arg(long, default_value_t = PortRange::DEFAULT_NODE_PORTS, value_name = "FIRST-LAST")]
    service_node_port_range: PortRange,
    /// Ranges externalIPs may come from, repeatable: externalIPs outside
    /// every one are not served. Without it any externalIP is served, as by
    /// kube-proxy (one of the node's own addresses with a warning).
    #[arg(long = "allow-external-ip-cidr", value_name = "CIDR")]
    allowed_external_ip_cidrs: Vec<Cidr>,
    /// cgroup v2 directory for the socket hooks (in a cluster: the root
    /// cgroup, e.g. /sys/fs/cgroup). Without it, only north-south traffic
    /// is served.
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// bpffs directory where maps and links are pinned.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Maglev table ids the datapath can hold (services with distinct
    /// backend sets); each id costs 8 bytes of kernel memory, and a table,
    /// while written, 8 to 512 KiB by its backend count.
    #[arg(long, default_value_t = lb_common::DEFAULT_MAX_TABLES)]
    max_tables: u32,
    /// Manifest files larger than this are not read (a problem of the file).
    #[arg(long, default_value_t = Limits::DEFAULT.max_file_bytes, value_name = "BYTES")]
    manifest_max_file_bytes: u64,
    /// Manifest files with more YAML documents than this are not used.
    #[arg(long, default_value_t = Limits::DEFAULT.max_documents, value_name = "COUNT")]
    manifest_max_documents: usize,
    /// Documents nesting mappings and sequences deeper than this are not used.
    #[arg(long, default_value_t = Limits::DEFAULT.max_depth, value_name = "LEVELS")]
    manifest_max_depth: usize,
    /// Where the agent writes its status (status.json) for `lb status`.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Prometheus endpoint (path /metrics), as kube-proxy's flag; an empty
    /// value disables it.
    #[arg(long, default_value = "127.0.0.1:10249", value_name = "ADDRESS:PORT")]
    metrics_bind_address: String,
    /// Print the plan for the manifests (or the cluster's state, once the
    /// initial lists are complete) against what the pinned datapath holds
    /// (or an empty one) and exit, without changing the kernel.
    #[arg(long)]
    dry_run: bool,
    /// Log every verdict the datapath takes (aya-log, at debug level: run
    /// with RUST_LOG=debug). For debugging only: it costs throughput.
    #[arg(long)]
    bpf_log: bool,
    /// `/healthz` and `/livez` (kube-proxy's flag, port and answers); an
    /// empty value disables them.
    #[arg(long, default_value = "0.0.0.0:10256", value_name = "ADDRESS:PORT")]
    healthz_bind_address: String,
    /// The shortest time between syncs, as kube-proxy's flag: changes
    /// within it are applied together at its end (e.g. 1s, 500ms, 0s).
    #[arg(long, default_value = "1s", value_parser = config::parse_duration, value_name = "DURATION")]
    min_sync_period: Duration,
    /// The longest time between syncs, as kube-proxy's flag: the periodic
    /// resync re-reads the maps and repairs what changed behind the agent's
    /// back (e.g. 30s, 1m).
    #[arg(long, default_value = "30s", value_parser = config::parse_duration, value_name = "DURATION")]
    sync_period: Duration,
    /// The sync period in seconds (the flag of earlier lb versions).
    #[arg(long, hide = true, value_name = "SECONDS")]
    resync_seconds: Option<u64>,
    /// Log lines as text, or as one JSON object each (for log collectors).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    // connection table (issue 11)
    /// Entries of the connection table of established flows (two per flow);
    /// the table of new flows gets a quarter as many. Both are allocated
    /// whole at load time: about 100 bytes of kernel memory per entry
    /// (the default, 1Mi, costs about 130 MiB with the new-flow table).
    #[arg(long, default_value_t = lb_common::DEFAULT_CT_ENTRIES, value_name = "ENTRIES")]
    ct_entries: u32,
    /// The flow hash's seed: the same on every node of a cluster (so every
    /// node picks the same backend for a flow), secret from outsiders (so
    /// they cannot aim flows at one backend). Changing it moves new flows
    /// only.
    #[arg(long, default_value_t = 0, value_name = "U32")]
    hash_seed: u32,
    // snat
    /// Device(s) this node reaches its own pods by (a CNI bridge such as
    /// cni0), repeatable or comma-separated: tcx ingress there translates
    /// back the replies of local pods to masqueraded connections, so
    /// backends on this node are masqueraded too (kube-proxy's rule under
    /// externalTrafficPolicy Cluster). None: they keep the client's address.
    #[arg(long = "pod-device", env = "LB_POD_DEVICES", value_delimiter = ',')]
    pod_devices: Vec<String>,
    // forwarding in XDP
    /// Forward translated packets from XDP (FIB lookup, then XDP_TX or a
    /// redirect) when their route leaves by one of the --device devices, or
    /// by a device the kernel says takes redirected frames (a routed pod's
    /// veth whose pod end runs NAPI), instead of through the kernel's IP
    /// forwarding: remote backends, routed local pods and the replies of
    /// masqueraded flows. Packets to pods behind a bridge, and any the FIB
    /// cannot forward at once (no neighbour yet, too large), still take
    /// the stack. Bypasses netfilter for those packets, as Cilium's XDP
    /// acceleration does. A veth device needs XDP (or GRO) on its peer to
    /// accept XDP frames: leave this off there unless its peer has it.
    /// `--xdp-forward` alone is `--xdp-forward=true`.
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    xdp_forward: bool,
    // icmp errors and fragments
    /// Fragmented IPv4 datagrams whose ports are remembered at once (an
    /// LRU map, 16 bytes an entry, allocated at load time): a datagram's
    /// later fragments carry no ports and are translated by its first's.
    /// An evicted entry costs its datagram's later fragments.
    #[arg(long, default_value_t = lb_common::frag::DEFAULT_FRAG_ENTRIES, value_name = "ENTRIES")]
    frag_entries: u32,
    // tables (issue 13)
    /// Backends (distinct endpoint addresses and ports) the datapath holds
    /// [default: 1048576]: the backends map and the per-backend connection
    /// counts are allocated whole at load time, 88 bytes of kernel memory
    /// per backend (memlock: the default costs 88 MiB). Without the
    /// flag a pinned datapath keeps its size; with another size than the
    /// pinned one the agent refuses to start (resizing needs `lb cleanup`).
    #[arg(long, value_name = "BACKENDS")]
    max_backends: Option<u32>,
    // table sizes (issue 11)
    /// Socket translations remembered at once: the reverse translation of
    /// each socket the socket hooks sent to a backend (an LRU map, 28 bytes
    /// of key and value an entry, allocated at load time), so that replies
    /// to unconnected UDP sockets (DNS clients) come from the ClusterIP and
    /// getpeername() names it. An evicted entry costs its socket that.
    #[arg(long, default_value_t = lb_common::DEFAULT_SOCK_REVNAT_ENTRIES, value_name = "ENTRIES")]
    sock_revnat_entries: u32,
    /// Session-affinity clients remembered at once (sessionAffinity
    /// ClientIP; an LRU map, 24 bytes of key and value an entry, allocated
    /// at load time). An evicted client picks its backend again.
    #[arg(long, default_value_t = lb_common::DEFAULT_AFFINITY_ENTRIES, value_name = "ENTRIES")]
    affinity_entries: u32,
    // masquerade detector
    /// The cluster's pod CIDR, as kube-proxy's --cluster-cidr with
    /// detect-local-mode ClusterCIDR (repeatable or comma-separated, at
    /// most one per IP family): a connection to a ClusterIP whose source is
    /// outside it (the node itself, or a client a router sends the Service
    /// CIDR through this node) is masqueraded to the node's address.
    /// Without it nothing reaching a ClusterIP is masqueraded, as by
    /// kube-proxy without a cluster CIDR.
    #[arg(
        long = "cluster-cidr",
        env = "LB_CLUSTER_CIDR",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    cluster_cidrs: Vec<Cidr>,
    /// Masquerade every connection to a ClusterIP, as kube-proxy's
    /// --masquerade-all (NodePorts, LoadBalancer IPs and externalIPs keep
    /// their own rule, as under kube-proxy). Connections from this node's
    /// pods and processes are translated at connect() and keep their
    /// source (`lb trace` says so).
    #[arg(long)]
    masquerade_all: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl AgentArgs {
    /// `--sync-period`, or the hidden `--resync-seconds` of earlier
    /// versions (at least 1) when given; refused as kube-proxy refuses it
    /// when zero or under `--min-sync-period`.
    fn sync_period(&self) -> Result<Duration> {
        let period = self
            .resync_seconds
            .map_or(self.sync_period, |s| Duration::from_secs(s.max(1)));
        if period.is_zero() {
            anyhow::bail!("--sync-period must be greater than 0, such as 30s");
        }
        if period < self.min_sync_period {
            anyhow::bail!(
                "--sync-period ({period:?}) must be at least --min-sync-period ({:?}): raise the one or lower the other",
                self.min_sync_period
            );
        }
        Ok(period)
    }

    pub fn into_config(self) -> Result<AgentConfig> {
        let resync = self.sync_period()?;
        let nodeport_addresses =
            NodePortAddresses::parse(&self.nodeport_addresses).map_err(anyhow::Error::msg)?;
        let node = node::facts(self.node_name, self.node_addresses, self.zone)?;
        if let Some(name) = &self.service_proxy_name {
            selectors::check_proxy_name(name).map_err(anyhow::Error::msg)?;
        }
        let source = match self.manifests {
            Some(dir) => SourceConfig::Manifests {
                dir,
                limits: Limits {
                    max_file_bytes: self.manifest_max_file_bytes,
                    max_documents: self.manifest_max_documents,
                    max_depth: self.manifest_max_depth,
                },
            },
            None => SourceConfig::Cluster(ClusterConfig {
                kubeconfig: self.kubeconfig,
                node_name: node.name.clone(),
                service_proxy_name: self.service_proxy_name.clone(),
                nodeport_addresses: nodeport_addresses.clone(),
            }),
        };
        let node = match source {
            SourceConfig::Manifests { .. } => nodeport_addresses
                .filter_configured(node)
                .map_err(anyhow::Error::msg)?,
            SourceConfig::Cluster(_) => node,
        };
        Ok(AgentConfig {
            source,
            state_dir: self.state_dir,
            metrics_address: bind_address(&self.metrics_bind_address, "--metrics-bind-address")?,
            devices: self.devices,
            xdp_generic: self.xdp_generic,
            node,
            rules: Rules {
                service_cidrs: self.service_cidrs,
                node_port_range: self.service_node_port_range,
                allowed_external_ip_cidrs: self.allowed_external_ip_cidrs,
                service_proxy_name: self.service_proxy_name,
            },
            cgroup: self.cgroup,
            pin_dir: self.pin_dir,
            max_tables: self.max_tables,
            resync,
            min_sync_period: self.min_sync_period,
            healthz_address: bind_address(&self.healthz_bind_address, "--healthz-bind-address")?,
            dry_run: self.dry_run,
            bpf_log: self.bpf_log,
            ct_entries: self.ct_entries,
            hash_seed: self.hash_seed,
            pod_devices: self.pod_devices,
            xdp_forward: self.xdp_forward,
            frag_entries: self.frag_entries,
            max_backends: self.max_backends,
            sock_revnat_entries: self.sock_revnat_entries,
            affinity_entries: self.affinity_entries,
            masquerade: MasqueradeConfig::new(&self.cluster_cidrs, self.masquerade_all)?,
        })
    }
}

/// `--metrics-bind-address`, `--healthz-bind-address`: empty disables the
/// endpoint.
fn bind_address(text: &str, flag: &str) -> Result<Option<SocketAddr>> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|err| {
        anyhow::anyhow!(
            "{flag} {text:?}: {err}; give an address and port such as 0.0.0.0:10256, or '' to disable"
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::Parser;
    use k8s_openapi::api::{apps::v1::DaemonSet, core::v1::ConfigMap};
    use lb::agent::SourceConfig;

    use crate::{Cli, Command};

    fn deploy_file(name: &str) -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/");
        std::fs::read_to_string(format!("{path}{name}")).expect("deploy/ is in the repo")
    }

    /// The DaemonSet's `lb` arguments, with the `$(VAR)`s the kubelet
    /// expands (from the downward API and deploy/config.yaml) expanded.
    fn daemonset_args() -> Vec<String> {
        let daemonset: DaemonSet =
            serde_saphyr::from_str(&deploy_file("daemonset.yaml")).expect("a DaemonSet");
        let config: ConfigMap =
            serde_saphyr::from_str(&deploy_file("config.yaml")).expect("a ConfigMap");
        let data = config.data.expect("config.yaml has data");
        let pod = daemonset.spec.template.spec.expect("pod spec");
        let container = pod
            .containers
            .iter()
            .find(|c| c.name == "lb")
            .expect("a container named lb");
        let mut values = BTreeMap::from([("NODE_IP".to_owned(), "192.0.2.1".to_owned())]);
        for var in container.env.iter().flatten() {
            let from_config = var
                .value_from
                .as_ref()
                .and_then(|from| from.config_map_key_ref.as_ref());
            // An optional key may be absent: its variable is then unset.
            let value = from_config.and_then(|key| data.get(&key.key));
            if let Some(value) = value {
                values.insert(var.name.clone(), value.clone());
            }
        }
        let mut args = container.args.clone().expect("args");
        for arg in &mut args {
            for (name, value) in &values {
                *arg = arg.replace(&format!("$({name})"), value);
            }
        }
        assert!(
            !args.iter().any(|a| a.contains("$(")),
            "an unexpanded variable: {args:?}"
        );
        args
    }

    /// Every flag deploy/daemonset.yaml passes is one `lb agent` takes, and
    /// together they make cluster mode with kube-proxy's health port: the
    /// manifests and the binary cannot drift apart unnoticed.
    #[test]
    fn the_daemonsets_arguments_are_a_valid_cluster_mode_agent() {
        let args = daemonset_args();
        let cli = Cli::try_parse_from(std::iter::once("lb".to_owned()).chain(args.clone()))
            .unwrap_or_else(|err| panic!("lb {args:?}: {err}"));
        let Command::Agent(agent) = cli.command else {
            panic!("the DaemonSet runs `lb agent`: {args:?}");
        };
        let config = agent.into_config().expect("a valid agent configuration");
        assert!(matches!(config.source, SourceConfig::Cluster(_)));
        assert_eq!(
            config.healthz_address,
            Some("0.0.0.0:10256".parse().unwrap())
        );
        assert_eq!(config.pin_dir, std::path::Path::new("/sys/fs/bpf/lb"));
        assert!(
            !config.xdp_forward,
            "forwarding in XDP is the operator's choice"
        );
    }

    #[test]
    fn xdp_forward_is_a_flag_or_takes_a_boolean() {
        let parse = |extra: &[&str]| {
            let args = ["lb", "agent", "--manifests", "/m"].iter().chain(extra);
            let Command::Agent(agent) = Cli::try_parse_from(args).unwrap().command else {
                unreachable!()
            };
            agent.into_config().unwrap().xdp_forward
        };
        assert!(!parse(&[]));
        assert!(parse(&["--xdp-forward"]));
        assert!(parse(&["--xdp-forward=true"]));
        assert!(!parse(&["--xdp-forward=false"]));
    }

    /// deploy/config.yaml's `cluster-cidr` reaches `--cluster-cidr` through
    /// the DaemonSet's LB_CLUSTER_CIDR (optional: without the key, no
    /// detector), and is a valid detector CIDR.
    #[test]
    fn the_configs_cluster_cidr_reaches_the_agent() {
        use clap::CommandFactory;

        let config: ConfigMap =
            serde_saphyr::from_str(&deploy_file("config.yaml")).expect("a ConfigMap");
        let cidr = config.data.expect("data")["cluster-cidr"].clone();
        let daemonset: DaemonSet =
            serde_saphyr::from_str(&deploy_file("daemonset.yaml")).expect("a DaemonSet");
        let pod = daemonset.spec.template.spec.expect("pod spec");
        let env = pod.containers[0].env.clone().unwrap_or_default();
        let var = env
            .iter()
            .find(|v| v.name == "LB_CLUSTER_CIDR")
            .expect("LB_CLUSTER_CIDR");
        let key = var
            .value_from
            .as_ref()
            .and_then(|f| f.config_map_key_ref.as_ref())
            .unwrap();
        assert_eq!(
            (key.key.as_str(), key.optional),
            ("cluster-cidr", Some(true))
        );
        let cli = Cli::command();
        let agent = cli.find_subcommand("agent").expect("lb agent");
        let flag = agent
            .get_arguments()
            .find(|a| a.get_long() == Some("cluster-cidr"))
            .expect("--cluster-cidr");
        assert_eq!(
            flag.get_env().and_then(|e| e.to_str()),
            Some("LB_CLUSTER_CIDR")
        );

        let mut args = daemonset_args();
        args.push(format!("--cluster-cidr={cidr}"));
        let cli = Cli::try_parse_from(std::iter::once("lb".to_owned()).chain(args)).unwrap();
        let Command::Agent(agent) = cli.command else {
            panic!("lb agent");
        };
        let config = agent.into_config().expect("a valid configuration");
        let detector = config.masquerade.cluster_cidr.map(|c| c.to_string());
        assert_eq!(detector.as_deref(), Some("10.244.0.0/16"));
        assert!(!config.masquerade.masquerade_all);
    }
}
