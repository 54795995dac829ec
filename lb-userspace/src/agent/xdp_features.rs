//! What each network device of this namespace says it can do with XDP
//! (`xdp_features`, kernel 6.3+), read from the kernel's `netdev` generic
//! netlink family, and a socket that wakes when any device's features
//! change (the family's `mgmt` group: a pod's GRO turned on or off, an
//! XDP program attached to a veth's other end, a device added or gone).
//!
//! No netlink crate here speaks the `netdev` family, and the three
//! messages it takes (resolve the family, dump the devices, join a group)
//! are a few lines each over a raw socket.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

const NETLINK_GENERIC: i32 = 16;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const CTRL_ATTR_MCAST_GROUPS: u16 = 7;
const CTRL_ATTR_MCAST_GRP_NAME: u16 = 1;
const CTRL_ATTR_MCAST_GRP_ID: u16 = 2;
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const SOL_NETLINK: i32 = 270;
const NETLINK_ADD_MEMBERSHIP: i32 = 1;
/// An attribute's type, without the nested and byte-order flags.
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_HEADER: usize = 16;
const GENL_HEADER: usize = 4;

/// The device's `ndo_xdp_xmit` works now: frames redirected to it from
/// XDP are sent (for a veth: its other end runs NAPI).
pub const NETDEV_XDP_ACT_NDO_XMIT: u64 = 4;

/// One device's XDP features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceXdp {
    pub ifindex: u32,
    pub features: u64,
}

impl DeviceXdp {
    /// Takes frames redirected to it from XDP.
    pub fn takes_redirects(&self) -> bool {
        self.features & NETDEV_XDP_ACT_NDO_XMIT != 0
    }
}

/// The `netdev` family on one netlink socket.
pub struct Netdev {
    socket: GenlSocket,
    family: u16,
    mgmt_group: Option<u32>,
}

impl Netdev {
    /// Resolves the `netdev` family (missing before kernel 6.3: `ENOENT`).
    pub fn open() -> io::Result<Netdev> {
        let mut socket = GenlSocket::open()?;
        let name = attribute(CTRL_ATTR_FAMILY_NAME, b"netdev\0");
        let replies = socket.request(
            GENL_ID_CTRL,
            CTRL_CMD_GETFAMILY,
            NLM_F_REQUEST | NLM_F_ACK,
            &name,
        )?;
        let reply = replies
            .first()
            .ok_or_else(|| invalid("no reply resolving netdev"))?;
        let (family, mgmt_group) = family(reply).ok_or_else(|| invalid("no netdev family id"))?;
        Ok(Netdev {
            socket,
            family,
            mgmt_group,
        })
    }

    /// Every device of the namespace with its features.
    pub fn devices(&mut self) -> io::Result<Vec<DeviceXdp>> {
        let replies = self.socket.request(
            self.family,
            NETDEV_CMD_DEV_GET,
            NLM_F_REQUEST | NLM_F_DUMP,
            &[],
        )?;
        Ok(replies.iter().filter_map(|reply| device(reply)).collect())
    }

    /// A socket that receives a message whenever a device's features
    /// change.
    pub fn changes(&self) -> io::Result<Changes> {
        let group = self
            .mgmt_group
            .ok_or_else(|| invalid("the netdev family has no mgmt group"))?;
        let socket = GenlSocket::open()?;
        // SAFETY: a plain setsockopt on our socket with a u32 option value.
        let rc = unsafe {
            libc::setsockopt(
                socket.fd.as_raw_fd(),
                SOL_NETLINK,
                NETLINK_ADD_MEMBERSHIP,
                (&group as *const u32).cast(),
                size_of::<u32>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Changes { socket })
    }
}

/// Notifications of changed devices.
pub struct Changes {
    socket: GenlSocket,
}

impl Changes {
    /// Waits up to `timeout` for a change; true if one came (every
    /// message waiting is read, so a burst wakes once).
    pub fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        let fd = self.socket.fd.as_raw_fd();
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one pollfd on our stack.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(err)
            };
        }
        if ready == 0 {
            return Ok(false);
        }
        let mut buf = vec![0u8; 16 * 1024];
        // An overrun (ENOBUFS) is a change too: the caller reads them all.
        while self.socket.recv(&mut buf, libc::MSG_DONTWAIT).is_ok() {}
        Ok(true)
    }
}

struct GenlSocket {
    fd: OwnedFd,
    seq: u32,
}

impl GenlSocket {
    fn open() -> io::Result<GenlSocket> {
        // SAFETY: plain socket(2); the fd is owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_GENERIC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: all-zero is a valid sockaddr_nl (the kernel picks the port).
        let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        address.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: bind(2) with a sockaddr_nl of its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&address as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(GenlSocket { fd, seq: 0 })
    }

    /// Sends one request and collects the replies' payloads (after the
    /// generic netlink header) up to its end: `NLMSG_DONE` for a dump, the
    /// acknowledgement otherwise.
    fn request(
        &mut self,
        family: u16,
        cmd: u8,
        flags: u16,
        attrs: &[u8],
    ) -> io::Result<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let message = message(family, cmd, flags, self.seq, attrs);
        // SAFETY: send(2) of our buffer.
        let sent = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut replies = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let len = self.recv(&mut buf, 0)?;
            for (kind, seq, body) in messages(&buf[..len]) {
                if seq != self.seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(replies),
                    NLMSG_ERROR => {
                        let code = body
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(-libc::EIO);
                        return if code == 0 {
                            Ok(replies)
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    _ => replies.push(body.get(GENL_HEADER..).unwrap_or_default().to_vec()),
                }
            }
        }
    }

    fn recv(&self, buf: &mut [u8], flags: i32) -> io::Result<usize> {
        // SAFETY: recv(2) into our buffer, at most its length.
        let len = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
            )
        };
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(len as usize)
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// A netlink message: header, generic netlink header (version 1), attributes.
fn message(family: u16, cmd: u8, flags: u16, seq: u32, attrs: &[u8]) -> Vec<u8> {
    let len = NLMSG_HEADER + GENL_HEADER + attrs.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&family.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[cmd, 1, 0, 0]);
    out.extend_from_slice(attrs);
    out
}

/// One attribute, padded to four bytes.
fn attribute(kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = 4 + payload.len();
    let mut out = Vec::with_capacity(len.next_multiple_of(4));
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(len.next_multiple_of(4), 0);
    out
}

/// The messages of one datagram: (type, sequence number, body after the header).
fn messages(mut buf: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HEADER {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HEADER || len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        out.push((kind, seq, &buf[NLMSG_HEADER..len]));
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    out
}

/// The attributes of a payload: (type, value).
fn attributes(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        if len < 4 || len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        out.push((kind, &buf[4..len]));
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    out
}

fn u32_of(value: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(value.get(..4)?.try_into().ok()?))
}

/// A `CTRL_CMD_GETFAMILY` reply: the family id and its `mgmt` group.
fn family(payload: &[u8]) -> Option<(u16, Option<u32>)> {
    let attrs = attributes(payload);
    let id = attrs
        .iter()
        .find(|(kind, _)| *kind == CTRL_ATTR_FAMILY_ID)
        .and_then(|(_, value)| Some(u16::from_ne_bytes(value.get(..2)?.try_into().ok()?)))?;
    let mgmt = attrs
        .iter()
        .filter(|(kind, _)| *kind == CTRL_ATTR_MCAST_GROUPS)
        .flat_map(|(_, groups)| attributes(groups))
        .find_map(|(_, group)| {
            let group = attributes(group);
            let name = group
                .iter()
                .find(|(k, _)| *k == CTRL_ATTR_MCAST_GRP_NAME)?
                .1;
            let id = group.iter().find(|(k, _)| *k == CTRL_ATTR_MCAST_GRP_ID)?.1;
            (name == b"mgmt\0").then(|| u32_of(id)).flatten()
        });
    Some((id, mgmt))
}

/// A `NETDEV_CMD_DEV_GET` reply: the device and its features.
fn device(payload: &[u8]) -> Option<DeviceXdp> {
    let attrs = attributes(payload);
    let ifindex = u32_of(attrs.iter().find(|(k, _)| *k == NETDEV_A_DEV_IFINDEX)?.1)?;
    let features = attrs
        .iter()
        .find(|(k, _)| *k == NETDEV_A_DEV_XDP_FEATURES)
        .and_then(|(_, v)| Some(u64::from_ne_bytes(v.get(..8)?.try_into().ok()?)))
        .unwrap_or(0);
    Some(DeviceXdp { ifindex, features })
}

#[cfg(test)]
mod tests;
