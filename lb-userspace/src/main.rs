//! `lb`: argument parsing and dispatch; what each command does is in
//! `lb::ops::commands`.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::Result;
use clap::{Parser, Subcommand};
use lb::{
    agent::{AgentConfig, SourceConfig},
    desired::{Cidr, PortRange, Rules},
    model::Protocol,
    ops::{
        commands::{self, Reader, TraceRequest},
        explain::Entry,
        output::Format,
    },
    source::{ClusterConfig, Limits, NodePortAddresses, cluster::selectors, node},
};

#[derive(Parser)]
#[command(
    name = "lb",
    version,
    about = "eBPF/XDP service load balancer for Kubernetes (a kube-proxy replacement)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the datapath, attach it, and keep its maps in sync with the
    /// Services and EndpointSlices.
    Agent(Box<AgentArgs>),
    /// Service ports the datapath serves: frontends, policies, backends.
    Service {
        #[command(subcommand)]
        command: ListOnly,
    },
    /// Backends the datapath can send to, and which services use them.
    Backend {
        #[command(subcommand)]
        command: ListOnly,
    },
    /// Translated flows of the packet hooks (north-south traffic).
    Conntrack {
        #[command(subcommand)]
        command: ConntrackCommand,
    },
    /// Verdicts and drops by reason, and per service.
    Stats(ReadArgs),
    /// What the running agent reports: its source, its last sync, and every
    /// object it could not use, with the file and the reason.
    Status {
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Run the live datapath on one packet, changing nothing, and tell what
    /// it decides and why: frontend, policy, backend, verdict.
    Trace(TraceArgs),
    /// Detach the datapath and remove its pinned maps and links. Drops every
    /// translated connection: use only to uninstall.
    Cleanup {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ListOnly {
    List(ReadArgs),
}

#[derive(Subcommand)]
enum ConntrackCommand {
    List {
        #[command(flatten)]
        read: ReadArgs,
        /// Only flows with this address as client, frontend or backend.
        #[arg(long)]
        addr: Option<Ipv4Addr>,
        /// Only flows with this port as client, frontend or backend port.
        #[arg(long)]
        port: Option<u16>,
    },
}

#[derive(clap::Args)]
struct TraceArgs {
    #[command(flatten)]
    read: ReadArgs,
    /// Where the packet enters: from outside through an external device,
    /// or from a pod or the node itself (the socket hooks).
    #[arg(long, value_enum, default_value = "external")]
    from: Entry,
    /// Source address and port (the client).
    #[arg(long)]
    src: SocketAddrV4,
    /// Destination address and port (the frontend, or anything else).
    #[arg(long)]
    dst: SocketAddrV4,
    #[arg(long, value_enum, default_value = "tcp")]
    protocol: TraceProtocol,
    /// With --from pod|node: the socket cookie (SO_COOKIE) of a real socket,
    /// whose hash picks its backend; without it a new socket is shown.
    #[arg(long)]
    cookie: Option<u64>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TraceProtocol {
    Tcp,
    Udp,
}

/// Where a running agent's maps are, and how to print them.
#[derive(clap::Args)]
struct ReadArgs {
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    #[arg(short, long, value_enum, default_value = "table")]
    output: Format,
}

impl ReadArgs {
    fn reader(self) -> Reader {
        Reader {
            pin_dir: self.pin_dir,
            format: self.output,
        }
    }
}

const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/lb";
const DEFAULT_STATE_DIR: &str = "/run/lb";

#[derive(clap::Args)]
struct AgentArgs {
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
    /// repeatable or comma-separated.
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
    /// Maglev tables the datapath can hold (services with distinct backend
    /// sets); each costs 4 KiB of kernel memory.
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
    /// Re-read everything this often, to repair any drift.
    #[arg(long, default_value = "30", value_name = "SECONDS")]
    resync_seconds: u64,
    /// Print the plan for the manifests (or the cluster's state, once the
    /// initial lists are complete) against what the pinned datapath holds
    /// (or an empty one) and exit, without changing the kernel.
    #[arg(long)]
    dry_run: bool,
    /// Log every verdict the datapath takes (aya-log, at debug level: run
    /// with RUST_LOG=debug). For debugging only: it costs throughput.
    #[arg(long)]
    bpf_log: bool,
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes
    // away (`lb service list | head`) instead of panicking on EPIPE.
    // SAFETY: plain syscall at start-up, before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info".into())
                // kube-rs logs every failed request at ERROR: while the API
                // server is down that is a line per retry. The watch's own
                // line (source/cluster/error_log.rs) says it once a minute.
                .add_directive(
                    "kube_client::client::builder=off"
                        .parse()
                        .expect("a valid directive"),
                ),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lb: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Agent(args) => commands::agent(args.into_config()?),
        Command::Service {
            command: ListOnly::List(read),
        } => commands::list_services(&read.reader()),
        Command::Backend {
            command: ListOnly::List(read),
        } => commands::list_backends(&read.reader()),
        Command::Conntrack {
            command: ConntrackCommand::List { read, addr, port },
        } => commands::list_connections(&read.reader(), addr, port),
        Command::Stats(read) => commands::stats(&read.reader()),
        Command::Status { state_dir, output } => commands::status(&state_dir, output),
        Command::Trace(args) => commands::trace(&args.into_request()),
        Command::Cleanup { pin_dir } => commands::cleanup(&pin_dir),
    }
}

impl TraceArgs {
    fn into_request(self) -> TraceRequest {
        TraceRequest {
            reader: self.read.reader(),
            from: self.from,
            src: self.src,
            dst: self.dst,
            protocol: match self.protocol {
                TraceProtocol::Tcp => Protocol::Tcp,
                TraceProtocol::Udp => Protocol::Udp,
            },
            cookie: self.cookie,
        }
    }
}

impl AgentArgs {
    fn into_config(self) -> Result<AgentConfig> {
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
            metrics_address: metrics_address(&self.metrics_bind_address)?,
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
            resync: Duration::from_secs(self.resync_seconds.max(1)),
            dry_run: self.dry_run,
            bpf_log: self.bpf_log,
        })
    }
}

/// `--metrics-bind-address`: empty disables the endpoint.
fn metrics_address(text: &str) -> Result<Option<SocketAddr>> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|err| {
        anyhow::anyhow!(
            "--metrics-bind-address {text:?}: {err}; give an address and port such as 127.0.0.1:10249, or '' to disable"
        )
    })
}
