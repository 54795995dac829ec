//! `--pod-device auto`: the pod hook (`lb_tc_pod_ingress`, local pods'
//! masqueraded replies back) follows the devices this node reaches its
//! local endpoints by, as pods come and go: a CNI bridge (`cni0`) once, or
//! each pod's own veth (kindnet, Calico's `cali*`). At each sync, before
//! the plan is applied, every local endpoint's device is looked up in the
//! routing table (`routes`), hooked if it is not yet (or was
//! recreated: its ifindex changed), and hooks on devices no endpoint uses
//! any more are removed.
//!
//! Local backends are masqueraded (`lb_snat_local_v1`) only while every
//! local endpoint's replies have a hook, or come back through the network:
//! one endpoint whose device could not be hooked, or that no route
//! reaches, turns it off for all (they keep the client's address, as
//! without `--pod-device`), so no masqueraded reply is ever left
//! untranslated. The hooks are attached before the backends are written,
//! so a new pod's first connection already finds its hook.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use anyhow::{Context, Result};
use tracing::{info, warn};

use super::routes::{Reach, RouteTable};
use crate::datapath::{KernelMaps, loader::Datapath};

/// The routing table of the calling thread's network namespace.
const ROUTES: &str = "/proc/thread-self/net/route";

/// What the reconciler changes: the hooks, by device.
pub trait PodHooks: Send {
    fn attach(&mut self, device: &str) -> Result<()>;
    fn detach(&mut self, device: &str) -> Result<()>;
    /// The device's ifindex now (`None`: it is gone).
    fn ifindex(&self, device: &str) -> Option<u32>;
    fn routes(&self) -> Result<RouteTable>;
    /// Masquerades local backends, or not (`lb_snat_local_v1`).
    fn masquerade_local_backends(&mut self, on: bool) -> Result<()>;
}

/// The real hooks: the datapath's program on real devices.
pub struct DatapathHooks {
    pub datapath: Datapath,
    pub maps: KernelMaps,
}

impl PodHooks for DatapathHooks {
    fn attach(&mut self, device: &str) -> Result<()> {
        // A reply translated back carries a node address as its source:
        // without accept_local the stack drops it, so a device without it
        // counts as not hooked (local backends keep the client's address).
        super::snat_sysctl::accept_local(device).map_err(anyhow::Error::msg)?;
        self.datapath.attach_tc_pod_ingress(device).map(drop)
    }

    fn detach(&mut self, device: &str) -> Result<()> {
        self.datapath.detach_tc_pod_ingress(device).map(drop)
    }

    fn ifindex(&self, device: &str) -> Option<u32> {
        nix::net::if_::if_nametoindex(device).ok()
    }

    fn routes(&self) -> Result<RouteTable> {
        let text = std::fs::read_to_string(ROUTES).with_context(|| format!("reading {ROUTES}"))?;
        Ok(RouteTable::parse(&text))
    }

    fn masquerade_local_backends(&mut self, on: bool) -> Result<()> {
        Ok(self.maps.set_masquerade_local_backends(on)?)
    }
}

/// The pod hook's devices under `--pod-device auto`.
pub struct PodDevices {
    hooks: Box<dyn PodHooks>,
    /// The external devices (`--device`): never a pod device.
    external: BTreeSet<String>,
    /// Devices named with `--pod-device`: hooked at start, kept.
    named: BTreeSet<String>,
    /// Devices hooked here, with their ifindex when hooked (`None`: found
    /// pinned by an earlier agent).
    hooked: BTreeMap<String, Option<u32>>,
    /// What `lb_snat_local_v1` holds, as last written.
    masquerading: Option<bool>,
    /// Devices whose hook failed, warned of once until it succeeds.
    failing: BTreeSet<String>,
    /// The local endpoints no route reached, as last warned of.
    unreached: Vec<Ipv4Addr>,
}

impl PodDevices {
    /// `pinned`: the devices an earlier agent's hooks are pinned on, taken
    /// over (kept if still wanted, else removed at the first sync).
    pub fn new(
        hooks: Box<dyn PodHooks>,
        external: BTreeSet<String>,
        named: BTreeSet<String>,
        pinned: BTreeSet<String>,
    ) -> PodDevices {
        let hooked = pinned
            .into_iter()
            .filter(|device| !named.contains(device))
            .map(|device| (device, None))
            .collect();
        PodDevices {
            hooks,
            external,
            named,
            hooked,
            masquerading: None,
            failing: BTreeSet::new(),
            unreached: Vec::new(),
        }
    }

    /// Hooks the devices of `local_endpoints` (the addresses of the
    /// endpoints not known to be on another node), removes the hooks no
    /// endpoint needs, and says whether local backends are masqueraded.
    pub fn sync(&mut self, local_endpoints: &BTreeSet<Ipv4Addr>) -> Result<()> {
        let routes = self.hooks.routes()?;
        let mut wanted = BTreeSet::new();
        let mut unreached = Vec::new();
        for &addr in local_endpoints {
            match routes.reach(addr, &self.external) {
                Reach::PodDevice(device) => {
                    wanted.insert(device);
                }
                Reach::Network => {}
                Reach::Unrouted => unreached.push(addr),
            }
        }
        let failed = self.hook(&wanted);
        self.unhook(&wanted);
        let masquerade = unreached.is_empty() && failed.is_empty();
        if !unreached.is_empty() && unreached != self.unreached {
            warn!(
                endpoints = ?unreached,
                "no route reaches these local endpoints: local backends keep the client's address"
            );
        }
        self.unreached = unreached;
        if self.masquerading != Some(masquerade) {
            self.hooks.masquerade_local_backends(masquerade)?;
            self.masquerading = Some(masquerade);
        }
        Ok(())
    }

    /// Hooks each wanted device not hooked, or recreated since; returns the
    /// devices that failed.
    fn hook(&mut self, wanted: &BTreeSet<String>) -> Vec<String> {
        let mut failed = Vec::new();
        for device in wanted.difference(&self.named) {
            let now = self.hooks.ifindex(device);
            if now.is_some() && self.hooked.get(device) == Some(&now) {
                continue;
            }
            match self.hooks.attach(device) {
                Ok(()) => {
                    info!(device, "pod hook attached (--pod-device auto)");
                    self.hooked.insert(device.clone(), now);
                    self.failing.remove(device);
                }
                Err(err) => {
                    if self.failing.insert(device.clone()) {
                        warn!(
                            device,
                            "attaching the pod hook failed, will retry at each sync; until \
                             then local backends keep the client's address: {err:#}"
                        );
                    }
                    self.hooked.remove(device);
                    failed.push(device.clone());
                }
            }
        }
        failed
    }

    /// Removes the hooks of devices no endpoint is reached by any more (a
    /// pod's veth after the pod left, or already gone with it).
    fn unhook(&mut self, wanted: &BTreeSet<String>) {
        let unwanted: Vec<String> = self
            .hooked
            .keys()
            .filter(|device| !wanted.contains(*device))
            .cloned()
            .collect();
        for device in unwanted {
            match self.hooks.detach(&device) {
                Ok(()) => {
                    self.hooked.remove(&device);
                }
                Err(err) => warn!(device, "removing the pod hook failed, will retry: {err:#}"),
            }
        }
    }
}

/// The reconciler over the real datapath, taking over the hooks an earlier
/// agent pinned.
pub(super) fn start(
    config: &super::AgentConfig,
    datapath: Datapath,
    external: Vec<String>,
) -> Result<PodDevices> {
    let pinned = datapath
        .pod_hook_devices()
        .context("listing the pod hook's pinned links")?;
    let maps = datapath.maps().context("opening the datapath maps")?;
    let named = config.named_pod_devices().cloned().collect();
    Ok(PodDevices::new(
        Box::new(DatapathHooks { datapath, maps }),
        external.into_iter().collect(),
        named,
        pinned,
    ))
}

/// The addresses of the endpoints whose replies may enter this node by a
/// pod's device: every IPv4 endpoint not known to be on another node.
pub fn local_endpoints(state: &crate::model::DesiredState) -> BTreeSet<Ipv4Addr> {
    state
        .frontends
        .values()
        .flat_map(|spec| &spec.endpoints)
        .filter(|endpoint| !endpoint.remote)
        .filter_map(|endpoint| match endpoint.backend.addr {
            std::net::IpAddr::V4(addr) => Some(addr),
            std::net::IpAddr::V6(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
