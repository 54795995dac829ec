//! Terminating connected UDP sockets whose backend was removed: the socket
//! hooks rewrote their `connect()` to a backend address, which the kernel
//! keeps as the socket's peer, so a statsd, syslog or QUIC client would
//! send into a void forever. The kernel's socket-destroy path
//! (`SOCK_DESTROY` over `NETLINK_SOCK_DIAG`, `CONFIG_INET_DIAG_DESTROY`)
//! aborts them: the socket reports `ECONNABORTED` and loses its peer (its
//! next `send()` fails with `EDESTADDRREQ`), so the client connects again,
//! to a live backend. Sockets are per network namespace,
//! so each namespace a process of the socket hooks' cgroup runs in is
//! visited (in a cluster the root cgroup: the node and every pod, which
//! needs the agent to see them: hostPID), and no other: an agent never
//! touches sockets its hooks did not translate.

use std::{
    collections::BTreeSet,
    fs, io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use lb_common::Endpoint4;

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const ALL_STATES: u32 = !0;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

/// `struct inet_diag_sockid`: ports and addresses in network order.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SockId {
    sport_be: u16,
    dport_be: u16,
    src: [u32; 4],
    dst: [u32; 4],
    interface: u32,
    cookie: [u32; 2],
}

/// `struct inet_diag_req_v2`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct DiagRequest {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: SockId,
}

/// The start of `struct inet_diag_msg`.
#[repr(C)]
#[derive(Clone, Copy)]
struct DiagMsg {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: SockId,
}

#[repr(C)]
struct Request {
    header: NlMsgHdr,
    body: DiagRequest,
}

/// Aborts, in the current network namespace, every UDP socket whose peer
/// is one of `backends`: how many.
pub fn destroy_udp_connected_to(backends: &[Endpoint4]) -> io::Result<usize> {
    if backends.is_empty() {
        return Ok(0);
    }
    destroy_udp_where(&|peer, _| backends.contains(&peer))
}

/// Aborts, in the current network namespace, every UDP socket whose peer
/// and cookie (`bpf_get_socket_cookie`'s) `matches` accepts: how many.
pub fn destroy_udp_where(matches: &(dyn Fn(Endpoint4, u64) -> bool + Sync)) -> io::Result<usize> {
    let socket = netlink_socket()?;
    let mut ids = Vec::new();
    dump_udp(&socket, |id| {
        let cookie = u64::from(id.cookie[0]) | (u64::from(id.cookie[1]) << 32);
        if matches(Endpoint4::new(id.dst[0], id.dport_be), cookie) {
            ids.push(id);
        }
    })?;
    let mut destroyed = 0;
    for id in ids {
        match destroy(&socket, id) {
            Ok(()) => destroyed += 1,
            // Closed meanwhile.
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(destroyed)
}

/// [`destroy_udp_connected_to`] in every network namespace a process of
/// `cgroup` (or of a cgroup below it) runs in, each from a thread that
/// enters it. A namespace that cannot be entered, or a process whose
/// namespace cannot be read (without CAP_SYS_PTRACE), is skipped and
/// reported in the error list.
pub fn destroy_udp_connected_to_in_cgroup(
    cgroup: &Path,
    backends: &[Endpoint4],
) -> (usize, Vec<(PathBuf, io::Error)>) {
    destroy_udp_in_cgroup_where(cgroup, &|peer, _| backends.contains(&peer))
}

/// [`destroy_udp_where`] in every network namespace of `cgroup`, as
/// [`destroy_udp_connected_to_in_cgroup`].
pub fn destroy_udp_in_cgroup_where(
    cgroup: &Path,
    matches: &(dyn Fn(Endpoint4, u64) -> bool + Sync),
) -> (usize, Vec<(PathBuf, io::Error)>) {
    let mut destroyed = 0;
    let mut failed = Vec::new();
    let own = fs::read_link("/proc/self/ns/net").ok();
    let (namespaces, unreadable) = namespaces_of_cgroup(cgroup);
    failed.extend(unreadable);
    for path in namespaces {
        // The agent's own namespace (the node's) needs no setns, so no
        // CAP_SYS_ADMIN: CAP_NET_ADMIN alone destroys its sockets.
        let result = if own.is_some() && fs::read_link(&path).ok() == own {
            destroy_udp_where(matches)
        } else {
            in_namespace(&path, || destroy_udp_where(matches))
        };
        match result {
            Ok(n) => destroyed += n,
            Err(err) => failed.push((path, err)),
        }
    }
    (destroyed, failed)
}

/// One `/proc/<pid>/ns/net` per distinct network namespace of the
/// processes in `cgroup` and the cgroups below it; and the processes whose
/// namespace could not be read (one that exited meanwhile is not counted).
pub fn namespaces_of_cgroup(cgroup: &Path) -> (Vec<PathBuf>, Vec<(PathBuf, io::Error)>) {
    let mut seen = BTreeSet::new();
    let mut paths = Vec::new();
    let mut unreadable = Vec::new();
    let mut dirs = vec![cgroup.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter(|l| !l.is_empty()) {
            let path = Path::new("/proc").join(pid).join("ns/net");
            match fs::read_link(&path) {
                Ok(target) => {
                    if seen.insert(target) {
                        paths.push(path);
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => unreadable.push((path, err)),
            }
        }
        if let Ok(entries) = fs::read_dir(&dir) {
            dirs.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    (paths, unreadable)
}

fn in_namespace<T: Send>(path: &Path, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let file = fs::File::open(path)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: a plain syscall on a valid fd; only this thread moves.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}

fn netlink_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn send(socket: &OwnedFd, kind: u16, flags: u16, id: SockId) -> io::Result<()> {
    let request = Request {
        header: NlMsgHdr {
            len: size_of::<Request>() as u32,
            kind,
            flags: libc::NLM_F_REQUEST as u16 | flags,
            seq: 1,
            pid: 0,
        },
        body: DiagRequest {
            family: libc::AF_INET as u8,
            protocol: libc::IPPROTO_UDP as u8,
            states: ALL_STATES,
            id,
            ..DiagRequest::default()
        },
    };
    // SAFETY: a valid buffer of the size passed.
    let sent = unsafe {
        libc::send(
            socket.as_raw_fd(),
            (&raw const request).cast(),
            size_of::<Request>(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads replies until `NLMSG_DONE` (a dump) or the first `NLMSG_ERROR`
/// (an ack), calling `f` with each message's type and body.
fn receive(socket: &OwnedFd, mut f: impl FnMut(u16, &[u8])) -> io::Result<()> {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: a valid buffer of the size passed.
        let n = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut rest = &buffer[..n as usize];
        while rest.len() >= size_of::<NlMsgHdr>() {
            // SAFETY: length checked; plain data read unaligned.
            let header: NlMsgHdr = unsafe { std::ptr::read_unaligned(rest.as_ptr().cast()) };
            let len = header.len as usize;
            if len < size_of::<NlMsgHdr>() || len > rest.len() {
                return Err(io::Error::other("a truncated netlink message"));
            }
            let body = &rest[size_of::<NlMsgHdr>()..len];
            match header.kind {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    // `struct nlmsgerr`: a negative errno first, 0 for an ack.
                    let errno = body
                        .get(..4)
                        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                    return Ok(());
                }
                kind => f(kind, body),
            }
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        }
    }
}

fn dump_udp(socket: &OwnedFd, mut f: impl FnMut(SockId)) -> io::Result<()> {
    send(
        socket,
        SOCK_DIAG_BY_FAMILY,
        libc::NLM_F_DUMP as u16,
        SockId::default(),
    )?;
    receive(socket, |kind, body| {
        if kind == SOCK_DIAG_BY_FAMILY && body.len() >= size_of::<DiagMsg>() {
            // SAFETY: length checked; plain data read unaligned.
            let msg: DiagMsg = unsafe { std::ptr::read_unaligned(body.as_ptr().cast()) };
            if msg.family == libc::AF_INET as u8 {
                f(msg.id);
            }
        }
    })
}

fn destroy(socket: &OwnedFd, id: SockId) -> io::Result<()> {
    send(socket, SOCK_DESTROY, libc::NLM_F_ACK as u16, id)?;
    receive(socket, |_, _| {})
}
