//! `lb-probe`: the pods and clients of the demo and the end-to-end tests.
//!
//! A server answers every TCP line and every UDP datagram with its own name,
//! so a client learns which backend it reached. Every operation is bounded
//! by a timeout. `--netns` and `--cgroup` put the process where a pod or an
//! external client would be before any socket exists (setns applies to the
//! sockets created afterwards; the socket hooks see the cgroup of the
//! process that creates a socket).
use std::{
    fs,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::PathBuf,
    process::ExitCode,
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    /// Network namespace to enter first (a path such as /var/run/netns/NAME).
    #[arg(long, global = true)]
    netns: Option<PathBuf>,
    /// cgroup v2 directory to join first.
    #[arg(long, global = true)]
    cgroup: Option<PathBuf>,
    /// Per-operation timeout in milliseconds.
    #[arg(long, global = true, default_value_t = 2000)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Answer TCP lines and UDP datagrams with NAME until killed.
    Serve {
        #[arg(long)]
        name: String,
        #[arg(long)]
        tcp: Option<u16>,
        #[arg(long)]
        udp: Option<u16>,
        /// Answer `NAME from ADDR`: the source address the pod saw.
        #[arg(long)]
        tell_peer: bool,
    },
    /// COUNT TCP connections, one request each; prints the name that answered
    /// each (or `error: ...`). Exits 1 if any failed.
    Tcp {
        addr: SocketAddr,
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Connect from this source port (with --count 1): a trace of the
        /// same 5-tuple must pick the same backend.
        #[arg(long)]
        source_port: Option<u16>,
    },
    /// COUNT UDP exchanges, each from a new socket (a new source port).
    Udp {
        addr: SocketAddr,
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Send from this source port (with --count 1).
        #[arg(long)]
        source_port: Option<u16>,
        /// Datagrams of SIZE bytes (past the MTU: fragmented), each answer
        /// as large (the server pads it); an answer of another size fails.
        #[arg(long, default_value_t = 5)]
        size: usize,
    },
    /// One long-lived TCP connection: prints `peer <addr>` (what
    /// getpeername() says) and `cookie <n>` (its socket cookie, which the
    /// socket hooks hash to pick a backend), then for each stdin line sends
    /// it and prints the answer. For tests that hold a connection.
    Chat { addr: SocketAddr },
    /// One connected UDP socket, as a statsd or QUIC client keeps: prints
    /// `peer <addr>`, then for each stdin line sends it and prints the
    /// answer. When the socket is aborted (its backend was removed), it
    /// connects again, as such a client does, and prints `reconnected
    /// <answer>`.
    UdpChat { addr: SocketAddr },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("lb-probe: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<bool> {
    if let Some(cgroup) = &cli.cgroup {
        let procs = cgroup.join("cgroup.procs");
        fs::write(&procs, std::process::id().to_string())
            .with_context(|| format!("joining cgroup {}", cgroup.display()))?;
    }
    if let Some(netns) = &cli.netns {
        enter_netns(netns)?;
    }
    let timeout = Duration::from_millis(cli.timeout_ms);
    match cli.command {
        Command::Serve {
            name,
            tcp,
            udp,
            tell_peer,
        } => serve(&name, tcp, udp, tell_peer),
        Command::Tcp {
            addr,
            count,
            source_port,
        } => Ok(repeat(count, || tcp_request(addr, source_port, timeout))),
        Command::Udp {
            addr,
            count,
            source_port,
            size,
        } => Ok(repeat(count, || {
            udp_request(addr, source_port, size, timeout)
        })),
        Command::Chat { addr } => chat(addr, timeout),
        Command::UdpChat { addr } => udp_chat(addr, timeout),
    }
}

fn enter_netns(path: &PathBuf) -> Result<()> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: plain syscall on a valid fd; the process is still single-threaded.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "setns {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn repeat(count: u32, mut request: impl FnMut() -> Result<String>) -> bool {
    let mut ok = true;
    for _ in 0..count {
        match request() {
            Ok(name) => println!("{name}"),
            Err(err) => {
                println!("error: {err:#}");
                ok = false;
            }
        }
    }
    ok
}

fn tcp_request(addr: SocketAddr, source_port: Option<u16>, timeout: Duration) -> Result<String> {
    let stream = match source_port {
        None => TcpStream::connect_timeout(&addr, timeout),
        Some(port) => connect_from(port, addr, timeout),
    }
    .with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    exchange(&stream, &mut BufReader::new(&stream), "hello")
}

/// A TCP connection from a chosen local port, with a connect timeout.
fn connect_from(port: u16, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())?;
    socket.connect_timeout(&addr.into(), timeout)?;
    Ok(socket.into())
}

/// The kernel's cookie of a socket (SO_COOKIE).
fn socket_cookie(stream: &TcpStream) -> Result<u64> {
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        bail!("SO_COOKIE: {}", std::io::Error::last_os_error());
    }
    Ok(cookie)
}

fn exchange(
    mut stream: &TcpStream,
    reader: &mut BufReader<&TcpStream>,
    line: &str,
) -> Result<String> {
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    if reader.read_line(&mut answer)? == 0 {
        bail!("connection closed by peer");
    }
    Ok(answer.trim_end().to_string())
}

/// The largest datagram a probe sends or answers.
const MAX_DATAGRAM: usize = 65_507;

/// `hello`, padded with dots to `size` bytes (at least the word).
fn request_of(size: usize) -> Vec<u8> {
    let mut request = b"hello".to_vec();
    request.resize(size.clamp(request.len(), MAX_DATAGRAM), b'.');
    request
}

fn udp_request(
    addr: SocketAddr,
    source_port: Option<u16>,
    size: usize,
    timeout: Duration,
) -> Result<String> {
    let socket = UdpSocket::bind(("0.0.0.0", source_port.unwrap_or(0)))?;
    socket.set_read_timeout(Some(timeout))?;
    let request = request_of(size);
    socket
        .send_to(&request, addr)
        .with_context(|| format!("send to {addr}"))?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let (len, from) = socket
        .recv_from(&mut buf)
        .with_context(|| format!("no answer from {addr}"))?;
    // The socket hooks must make the answer appear to come from the frontend.
    if from != addr {
        bail!("answer came from {from}, not {addr}");
    }
    let answer = String::from_utf8_lossy(&buf[..len]);
    let name = answer.trim_end_matches(' ');
    if request.len() > name.len() && len != request.len() {
        bail!(
            "answer of {len} bytes to a request of {}: the server pads its answer to the request's size",
            request.len()
        );
    }
    Ok(name.to_string())
}

fn chat(addr: SocketAddr, timeout: Duration) -> Result<bool> {
    let stream =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    println!("peer {}", stream.peer_addr()?);
    println!("cookie {}", socket_cookie(&stream)?);
    let mut reader = BufReader::new(&stream);
    let mut ok = true;
    for line in std::io::stdin().lines() {
        match exchange(&stream, &mut reader, &line?) {
            Ok(answer) => println!("{answer}"),
            Err(err) => {
                println!("error: {err:#}");
                ok = false;
            }
        }
    }
    Ok(ok)
}

fn udp_chat(addr: SocketAddr, timeout: Duration) -> Result<bool> {
    let connect = || -> Result<UdpSocket> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(timeout))?;
        socket
            .connect(addr)
            .with_context(|| format!("connect {addr}"))?;
        Ok(socket)
    };
    let exchange = |socket: &UdpSocket, line: &str| -> std::io::Result<String> {
        socket.send(line.as_bytes())?;
        let mut buf = [0u8; 512];
        let len = socket.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
    };
    let aborted = |err: &std::io::Error| {
        matches!(
            err.raw_os_error(),
            Some(libc::ECONNABORTED | libc::EDESTADDRREQ)
        )
    };
    let mut socket = connect()?;
    println!("peer {}", socket.peer_addr()?);
    let mut ok = true;
    for line in std::io::stdin().lines() {
        let line = line?;
        match exchange(&socket, &line) {
            Ok(answer) => println!("{answer}"),
            Err(err) if aborted(&err) => {
                socket = connect()?;
                match exchange(&socket, &line) {
                    Ok(answer) => println!("reconnected {answer}"),
                    Err(err) => {
                        println!("error: {err}");
                        ok = false;
                    }
                }
            }
            Err(err) => {
                println!("error: {err}");
                ok = false;
            }
        }
    }
    Ok(ok)
}

fn serve(name: &str, tcp: Option<u16>, udp: Option<u16>, tell_peer: bool) -> Result<bool> {
    let answer = move |name: &str, peer: SocketAddr| {
        if tell_peer {
            format!("{name} from {}", peer.ip())
        } else {
            name.to_string()
        }
    };
    let mut workers = Vec::new();
    if let Some(port) = tcp {
        let listener =
            TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("bind tcp {port}"))?;
        let name = name.to_string();
        workers.push(thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let Ok(peer) = stream.peer_addr() else {
                    continue;
                };
                let text = answer(&name, peer);
                thread::spawn(move || answer_lines(stream, &text));
            }
        }));
    }
    if let Some(port) = udp {
        let socket =
            UdpSocket::bind(("0.0.0.0", port)).with_context(|| format!("bind udp {port}"))?;
        let name = name.to_string();
        workers.push(thread::spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                // As large as the request (spaces after the name), so a
                // large request gets a large, fragmented answer back.
                let mut text = answer(&name, from).into_bytes();
                text.resize(text.len().max(len), b' ');
                let _ = socket.send_to(&text, from);
            }
        }));
    }
    println!("ready");
    std::io::stdout().flush()?;
    for worker in workers {
        let _ = worker.join();
    }
    Ok(true)
}

fn answer_lines(stream: TcpStream, name: &str) {
    let mut writer = &stream;
    for line in BufReader::new(&stream).lines() {
        if line.is_err() || writer.write_all(format!("{name}\n").as_bytes()).is_err() {
            break;
        }
    }
}
