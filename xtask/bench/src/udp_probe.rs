//! UDP requests from the testbed's client to the target Service's NodePort,
//! each answered by the pod it reached (the pod servers answer with their
//! name): which backend a flow is translated to, seen from outside.
//!
//! The socket is made inside the client's namespace by a short-lived
//! thread (`setns` changes only the calling thread) and stays there: a
//! socket belongs to the namespace it was created in, whichever thread
//! uses it later.

use std::{
    fs::File,
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail};

/// One UDP flow (a fixed source port) from the client.
pub struct ClientFlow {
    socket: UdpSocket,
    target: SocketAddr,
}

impl ClientFlow {
    /// A flow from `source_port` in the namespace at `netns` to `target`.
    pub fn open(netns: &Path, source_port: u16, target: SocketAddr) -> Result<ClientFlow> {
        let netns: PathBuf = netns.to_owned();
        let socket = thread::spawn(move || -> Result<UdpSocket> {
            let ns = File::open(&netns).with_context(|| format!("open {}", netns.display()))?;
            // SAFETY: plain syscall on an fd we own; only this thread moves.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!(
                    "setns into {}: {} (the bench needs root)",
                    netns.display(),
                    std::io::Error::last_os_error()
                );
            }
            UdpSocket::bind(("0.0.0.0", source_port))
                .with_context(|| format!("bind udp {source_port} in the client namespace"))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))??;
        Ok(ClientFlow { socket, target })
    }

    /// One request; the name of the pod that answered within `timeout`,
    /// `None` if nothing (or something not from the frontend) came back.
    pub fn ask(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout)).ok()?;
        self.socket.send_to(b"bench", self.target).ok()?;
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 256];
        while Instant::now() < deadline {
            match self.socket.recv_from(&mut buf) {
                // The datapath rewrites answers to come from the frontend.
                Ok((len, from)) if from == self.target => {
                    return Some(String::from_utf8_lossy(&buf[..len]).into_owned());
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    }

    /// Asks until the answer satisfies `done`; the wall time of that
    /// answer (to compare with the agent's log). Bounded by `limit`; a
    /// request is repeated every few milliseconds when unanswered, which
    /// is the resolution of the figure.
    pub fn ask_until(
        &self,
        limit: Duration,
        mut done: impl FnMut(&str) -> bool,
    ) -> Result<SystemTime> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(answer) = self.ask(Duration::from_millis(3))
                && done(&answer)
            {
                return Ok(SystemTime::now());
            }
        }
        bail!(
            "no wanted answer from {} within {limit:?}: is the agent programming the Service?",
            self.target
        )
    }
}

/// A flow from the client that the datapath translated to `pod` (the
/// connection table then keeps it there until that backend goes): tries
/// fresh source ports from `*next_port` on.
pub fn flow_pinned_to(
    netns: &Path,
    target: SocketAddr,
    pod: &str,
    next_port: &mut u16,
) -> Result<ClientFlow> {
    for _ in 0..200 {
        let flow = ClientFlow::open(netns, next_source_port(next_port), target)?;
        if flow.ask(Duration::from_millis(200)).as_deref() == Some(pod) {
            return Ok(flow);
        }
    }
    bail!("no flow to {target} reached {pod} in 200 tries: is {pod} a backend?")
}

/// A fresh client source port (a new flow each time), from 40000 to 60000
/// and round again.
pub fn next_source_port(next: &mut u16) -> u16 {
    let port = *next;
    *next = if port >= 60_000 { 40_000 } else { port + 1 };
    port
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_wrap_inside_the_range() {
        let mut next = 60_000;
        assert_eq!(next_source_port(&mut next), 60_000);
        assert_eq!(next_source_port(&mut next), 40_000);
        assert_eq!(next, 40_001);
    }
}
