//! `lb`: argument parsing and dispatch; what each command does is in
//! `lb::ops::commands`, and `lb agent`'s flags are in `agent_args`.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Result;
use clap::{Parser, Subcommand};
use lb::{
    model::Protocol,
    ops::{
        commands::{self, Reader, TraceRequest},
        explain::Entry,
        output::Format,
    },
};

mod agent_args;
use agent_args::{AgentArgs, LogFormat};

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
    /// Session-affinity entries (sessionAffinity: ClientIP): which client
    /// is kept on which backend, and for how long.
    Affinity {
        #[command(subcommand)]
        command: ListOnly,
    },
    /// Verdicts and drops by reason, and per service.
    Stats(ReadArgs),
    /// What the running agent reports: its source, its last sync, and every
    /// object it could not use, with the file and the reason.
    Status {
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Where the maps are pinned, for their fill (needs CAP_BPF).
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
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
    /// With --from pod|node: the client's network namespace cookie (the
    /// `netns:<cookie>` of `lb affinity list`), for its session affinity.
    #[arg(long)]
    netns_cookie: Option<u64>,
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info".into())
        // kube-rs logs every failed request at ERROR: while the API server
        // is down that is a line per retry. The watch's own line
        // (source/cluster/error_log.rs) says it once a minute.
        .add_directive(
            "kube_client::client::builder=off"
                .parse()
                .expect("a valid directive"),
        );
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
        Command::Affinity {
            command: ListOnly::List(read),
        } => commands::list_affinity(&read.reader()),
        Command::Stats(read) => commands::stats(&read.reader()),
        Command::Status {
            state_dir,
            pin_dir,
            output,
        } => commands::status(&state_dir, &pin_dir, output),
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
            netns_cookie: self.netns_cookie,
        }
    }
}
