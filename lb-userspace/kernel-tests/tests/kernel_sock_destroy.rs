//! Connected UDP sockets to a removed backend are aborted through the
//! kernel's socket-destroy path (SOCK_DESTROY over NETLINK_SOCK_DIAG), in a
//! private network namespace: the socket connected to the removed backend
//! reports ECONNABORTED and loses its peer (its client connects again, to
//! a live backend, instead of sending into a void); a socket connected
//! elsewhere is untouched.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use common::*;
use lb::datapath::sock_destroy::{destroy_udp_connected_to, namespaces_of_cgroup};
use lb_common::Endpoint4;

/// Brings `lo` up in this thread's namespace.
fn loopback_up() {
    // SAFETY: plain syscalls on a fresh socket and a zeroed ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as i16;
        assert_eq!(
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req),
            0,
            "SIOCSIFFLAGS lo: {}",
            std::io::Error::last_os_error()
        );
        libc::close(fd);
    }
}

#[test]
fn connected_udp_sockets_to_a_removed_backend_are_aborted() {
    in_private_netns(|| {
        loopback_up();
        let removed = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 5353);
        let kept = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 3), 5353);
        let connect = |to: SocketAddrV4| {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.connect(to).unwrap();
            socket
        };
        let (to_removed, to_kept) = (connect(removed), connect(kept));
        let backend = Endpoint4::new(be32(*removed.ip()), be16(removed.port()));

        assert_eq!(destroy_udp_connected_to(&[backend]).unwrap(), 1);

        // The pending error reaches the client's next receive, and the
        // socket lost its peer: its next send needs an address again.
        to_removed.set_nonblocking(true).unwrap();
        let err = to_removed.recv(&mut [0u8; 16]).expect_err("aborted");
        assert_eq!(err.raw_os_error(), Some(libc::ECONNABORTED), "{err}");
        let err = to_removed.send(b"ping").expect_err("disconnected");
        assert_eq!(err.raw_os_error(), Some(libc::EDESTADDRREQ), "{err}");
        to_kept
            .send(b"ping")
            .expect("the other socket is untouched");
        assert_eq!(
            destroy_udp_connected_to(&[backend]).unwrap(),
            0,
            "gone once"
        );
    });
}

/// The namespaces visited are those of the socket hooks' cgroup's
/// processes: the test process's own cgroup yields its own namespace.
#[test]
fn the_namespaces_visited_are_those_of_the_cgroups_processes() {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let relative = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 path")
        .trim_start_matches('/');
    let cgroup = cgroup2_root().join(relative);
    let own_netns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let (namespaces, unreadable) = namespaces_of_cgroup(&cgroup);
    // Our own process's namespace is readable (others of the cgroup may not
    // be: this machine's PID 1 is not, even to root).
    let ours = std::path::Path::new("/proc")
        .join(std::process::id().to_string())
        .join("ns/net");
    assert!(
        unreadable.iter().all(|(path, _)| *path != ours),
        "{unreadable:?}"
    );
    let visited: Vec<_> = namespaces
        .iter()
        .filter_map(|p| std::fs::read_link(p).ok())
        .collect();
    assert!(
        visited.contains(&own_netns),
        "{visited:?} lacks {own_netns:?}"
    );
    // An empty cgroup of our own has no namespace at all.
    let empty = TestCgroup::create();
    assert_eq!(
        namespaces_of_cgroup(&empty.path).0,
        Vec::<std::path::PathBuf>::new()
    );
}
