//! The one kernel setting masquerade needs on each device the agent
//! attaches to: `net.ipv4.conf.<dev>.accept_local=1`.
//!
//! A masqueraded packet is passed to the stack (XDP_PASS) with the node's
//! own address as source: a new flow on its way to a backend on another
//! node, and a backend's reply translated back (its source is then the
//! frontend, a node address for a NodePort). The kernel's route input
//! takes a packet arriving with a local source address for a martian
//! (`fib_validate_source`) and drops it unless the device accepts local
//! sources. With `accept_local` it forwards both. The setting is left on
//! when the agent stops: the pinned datapath keeps masquerading without
//! it, and a device it is turned off on drops those flows.
//!
//! Strict reverse-path filtering (`rp_filter=1`) still drops a reply
//! that arrives on another device than the one holding the frontend
//! address; loose (`2`, most distributions' default) or off passes it.

use std::path::PathBuf;

/// Where the setting of `device` lives (in the agent's network namespace).
pub fn path(device: &str) -> PathBuf {
    PathBuf::from("/proc/sys/net/ipv4/conf")
        .join(device)
        .join("accept_local")
}

/// Turns `accept_local` on for `device` unless it is on already (for the
/// device or for `all`: the kernel takes either); the error says what to
/// do instead when the agent may not (a container's read-only
/// `/proc/sys`).
pub fn accept_local(device: &str) -> Result<(), String> {
    let is_on = |dev: &str| std::fs::read_to_string(path(dev)).map(|value| value.trim() == "1");
    let path = path(device);
    match (is_on("all"), is_on(device)) {
        (Ok(true), _) | (_, Ok(true)) => return Ok(()),
        (_, Ok(false)) => {}
        (_, Err(err)) => return Err(format!("reading {}: {err}", path.display())),
    }
    std::fs::write(&path, "1").map_err(|err| {
        format!(
            "writing {}: {err}; masqueraded connections (externalTrafficPolicy Cluster to a \
             backend on another node) are dropped as martians without it: on the node, run \
             `sysctl -w net.ipv4.conf.all.accept_local=1` and keep it in /etc/sysctl.d",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_setting_is_per_device() {
        assert_eq!(
            super::path("eth0").to_str(),
            Some("/proc/sys/net/ipv4/conf/eth0/accept_local")
        );
    }
}
