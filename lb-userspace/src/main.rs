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
    agent::{AgentConfig, config},
    desired::{Cidr, PortRange, Rules},
    model::Protocol,
    ops::{
        commands::{self, Reader, TraceRequest},
        explain::Entry,
        output::Format,
    },
    source::{Limits, node},
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
    /// applied again whenever a file in it changes.
    #[arg(long)]
    manifests: PathBuf,
    /// External device(s) for north-south traffic (XDP ingress, tc egress).
    #[arg(long = "device")]
    devices: Vec<String>,
    /// Attach XDP in generic (skb) mode instead of the driver's native mode.
    #[arg(long)]
    xdp_generic: bool,
    /// This node's name, as EndpointSlices' nodeName says it (default: hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// Addresses NodePorts listen on (default: every non-loopback IPv4
    /// address of this network namespace).
    #[arg(long = "node-address")]
    node_addresses: Vec<IpAddr>,
    /// This node's zone, for topology-aware routing.
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
    /// Print the plan for the manifests against what the pinned datapath
    /// holds (or an empty one) and exit, without changing the kernel.
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
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes
    // away (`lb service list | head`) instead of panicking on EPIPE.
    // SAFETY: plain syscall at start-up, before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    init_logging(match &cli.command {
        Command::Agent(args) => args.log_format,
        _ => LogFormat::Text,
    });
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lb: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by RUST_LOG (default `info`): text, coloured
/// on a terminal, or one JSON object a line (`--log-format json`).
fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
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

    fn into_config(self) -> Result<AgentConfig> {
        let resync = self.sync_period()?;
        Ok(AgentConfig {
            manifests: self.manifests,
            limits: Limits {
                max_file_bytes: self.manifest_max_file_bytes,
                max_documents: self.manifest_max_documents,
                max_depth: self.manifest_max_depth,
            },
            state_dir: self.state_dir,
            metrics_address: bind_address(&self.metrics_bind_address, "--metrics-bind-address")?,
            devices: self.devices,
            xdp_generic: self.xdp_generic,
            node: node::facts(self.node_name, self.node_addresses, self.zone)?,
            rules: Rules {
                service_cidrs: self.service_cidrs,
                node_port_range: self.service_node_port_range,
                allowed_external_ip_cidrs: self.allowed_external_ip_cidrs,
            },
            cgroup: self.cgroup,
            pin_dir: self.pin_dir,
            max_tables: self.max_tables,
            resync,
            min_sync_period: self.min_sync_period,
            healthz_address: bind_address(&self.healthz_bind_address, "--healthz-bind-address")?,
            dry_run: self.dry_run,
            bpf_log: self.bpf_log,
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
