//! What the datapath holds, in Kubernetes terms, read from the pinned maps
//! of a running agent: the data behind `lb service list`, `lb backend list`,
//! `lb conntrack list` and `lb stats` (and their JSON documents).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use lb_common::{Backend4, Frontend4Key, FrontendValue, ServiceCounters};
use serde::Serialize;

use crate::{
    datapath::{
        DatapathMaps, KernelMaps, MapsError,
        codec::{
            algorithm_from_code, backend_flags, frontend_entry, key_address, key_scope,
            protocol_name, service_from_info, socket_from_be,
        },
    },
    model::{Algorithm, FrontendKind, Scope, ServicePortInfo, ServicePortName, WhenEmpty},
};

#[derive(Debug, Serialize)]
pub struct ServiceView {
    /// `namespace/name:portname`.
    pub service: String,
    pub namespace: String,
    pub name: String,
    pub port_name: String,
    pub protocol: String,
    pub port: u16,
    pub external_traffic_policy: &'static str,
    pub internal_traffic_policy: &'static str,
    pub topology_aware: bool,
    pub algorithm: &'static str,
    pub frontends: Vec<FrontendView>,
    pub counters: Counters,
}

#[derive(Debug, Serialize)]
pub struct FrontendView {
    /// `ip:port`.
    pub address: String,
    /// `cluster-ip`, `node-port`, `load-balancer`, `external-ip`.
    pub kind: &'static str,
    /// `external` (XDP) or `internal` (socket hooks).
    pub scope: &'static str,
    /// What new traffic meets when there is no backend: `reject` or `drop`.
    pub when_empty: &'static str,
    /// loadBalancerSourceRanges: the sources allowed to open connections
    /// (CIDRs); empty: every source.
    pub source_ranges: Vec<String>,
    pub backends: Vec<BackendRef>,
}

#[derive(Debug, Serialize)]
pub struct BackendRef {
    pub address: String,
    /// `ready` or `terminating` (a fallback: no ready endpoint left).
    pub state: &'static str,
    pub local: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Counters {
    pub new_flows: u64,
    pub established: u64,
    pub rejected: u64,
    pub dropped: u64,
}

impl From<ServiceCounters> for Counters {
    fn from(c: ServiceCounters) -> Self {
        Counters {
            new_flows: c.new_flows,
            established: c.established,
            rejected: c.rejected,
            dropped: c.dropped,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct BackendView {
    pub id: u32,
    pub address: String,
    pub protocol: String,
    pub state: &'static str,
    pub local: bool,
    /// The service ports whose frontends can select it.
    pub services: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ConnectionView {
    pub protocol: String,
    pub client: String,
    pub frontend: String,
    pub backend: String,
    /// The source the backend sees when masqueraded (node address and SNAT
    /// port); `None`: the client's own.
    pub translated_source: Option<String>,
    pub service: Option<String>,
    /// `syn_sent`, `established`, `closing`, ... (`lb_common::ct`).
    pub state: &'static str,
    pub age_seconds: u64,
    pub idle_seconds: u64,
}

#[derive(Debug, Serialize)]
pub struct StatsView {
    /// Every verdict and drop reason, in counter order.
    pub reasons: Vec<ReasonCount>,
    pub services: Vec<ServiceCountersView>,
    /// What forwarding in XDP did (`--xdp-forward`), by outcome.
    pub forwarded: Vec<ReasonCount>,
}

#[derive(Debug, Serialize)]
pub struct ReasonCount {
    pub reason: &'static str,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct ServiceCountersView {
    pub service: String,
    #[serde(flatten)]
    pub counters: Counters,
}

/// A consistent-enough read of the maps (each map is read once).
pub struct Inspector {
    maps: KernelMaps,
    services: BTreeMap<u32, (ServicePortName, ServicePortInfo)>,
    frontends: Vec<(Frontend4Key, FrontendValue)>,
    backends: BTreeMap<u32, Backend4>,
}

impl Inspector {
    pub fn open(maps: KernelMaps) -> Result<Inspector, MapsError> {
        let services = maps
            .services()?
            .into_iter()
            .filter_map(|(id, info)| Some((id, service_from_info(&info)?)))
            .collect();
        let frontends = maps.frontends()?;
        let backends = maps.backends()?.into_iter().collect();
        Ok(Inspector {
            maps,
            services,
            frontends,
            backends,
        })
    }

    pub fn maps(&self) -> &KernelMaps {
        &self.maps
    }

    /// A service port's name and facts, by the id frontends carry.
    pub fn service(&self, id: u32) -> Option<&(ServicePortName, ServicePortInfo)> {
        self.services.get(&id)
    }

    pub fn service_name(&self, id: u32) -> Option<String> {
        self.service(id).map(|(name, _)| name.to_string())
    }

    /// Every frontend entry, as read when opened.
    pub fn frontend_entries(&self) -> &[(Frontend4Key, FrontendValue)] {
        &self.frontends
    }

    pub fn backend(&self, id: u32) -> Option<&Backend4> {
        self.backends.get(&id)
    }

    /// The distinct backend ids a frontend's table can select.
    pub fn backend_ids(&self, value: &FrontendValue) -> Result<BTreeSet<u32>, MapsError> {
        if value.backend_count == 0 {
            return Ok(BTreeSet::new());
        }
        Ok(self.maps.read_table(value.table_id)?.into_iter().collect())
    }

    pub fn services(&self) -> Result<Vec<ServiceView>, MapsError> {
        let ranges = crate::datapath::DatapathMaps::source_ranges(&self.maps)?;
        let mut views = Vec::new();
        for (&id, (name, info)) in &self.services {
            let mut frontends = Vec::new();
            for (key, value) in self.frontends.iter().filter(|(_, v)| v.service_id == id) {
                let mut backends = Vec::new();
                for backend_id in self.backend_ids(value)? {
                    if let Some(be) = self.backends.get(&backend_id) {
                        backends.push(backend_ref(be));
                    }
                }
                frontends.push(FrontendView {
                    address: key_address(key).to_string(),
                    kind: kind_name(value),
                    scope: scope_name(key),
                    when_empty: match frontend_entry(value).when_empty {
                        WhenEmpty::Drop => "drop",
                        WhenEmpty::Reject => "reject",
                    },
                    source_ranges: if value.has_source_ranges() {
                        let of_port = ranges.iter().filter(|(sid, _)| *sid == id);
                        of_port.map(|(_, range)| range.to_string()).collect()
                    } else {
                        Vec::new()
                    },
                    backends,
                });
            }
            frontends
                .sort_by(|a, b| (a.kind, &a.address, a.scope).cmp(&(b.kind, &b.address, b.scope)));
            views.push(ServiceView {
                service: name.to_string(),
                namespace: name.namespace.clone(),
                name: name.name.clone(),
                port_name: name.port_name.clone(),
                protocol: name.protocol.to_string(),
                port: info.port,
                external_traffic_policy: policy(info.external_policy_local),
                internal_traffic_policy: policy(info.internal_policy_local),
                topology_aware: info.topology_aware,
                algorithm: self
                    .frontends
                    .iter()
                    .find(|(_, value)| value.service_id == id)
                    .map_or(Algorithm::Maglev, |(_, value)| {
                        algorithm_from_code(value.algorithm())
                    })
                    .as_str(),
                frontends,
                counters: self.maps.service_counters(id)?.into(),
            });
        }
        views.sort_by(|a, b| a.service.cmp(&b.service));
        Ok(views)
    }

    pub fn backends(&self) -> Result<Vec<BackendView>, MapsError> {
        let mut users: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
        for (_, value) in &self.frontends {
            let name = self
                .service_name(value.service_id)
                .unwrap_or_else(|| format!("service {}", value.service_id));
            for id in self.backend_ids(value)? {
                users.entry(id).or_default().insert(name.clone());
            }
        }
        Ok(self
            .backends
            .iter()
            .map(|(id, be)| {
                let r = backend_ref(be);
                BackendView {
                    id: *id,
                    address: r.address,
                    protocol: protocol_name(be.proto),
                    state: r.state,
                    local: r.local,
                    services: users.remove(id).unwrap_or_default().into_iter().collect(),
                }
            })
            .collect())
    }

    /// Translated flows of the packet hooks (one row per flow: its original
    /// direction), optionally only those touching `addr` and/or `port`.
    pub fn connections(
        &self,
        addr: Option<Ipv4Addr>,
        port: Option<u16>,
    ) -> Result<Vec<ConnectionView>, MapsError> {
        let now = crate::datapath::kernel::monotonic_s();
        let entries = self.maps.connections()?;
        // A flow is as fresh as its fresher direction.
        let mut last_seen = std::collections::HashMap::new();
        for (key, value) in &entries {
            if let Some(flow) = key.original_flow(value) {
                let seen = last_seen.entry(flow).or_insert(value.last_seen_s);
                *seen = (*seen).max(value.last_seen_s);
            }
        }
        let mut rows = Vec::new();
        for (key, value) in entries {
            if !key.is_original() {
                continue;
            }
            let (flow, backend) = (key.flow(), value.nat());
            let ends = [flow.src, flow.dst, backend, value.peer()];
            let addr_ok = addr.is_none_or(|a| {
                ends.iter()
                    .any(|end| end.addr_be == u32::from_ne_bytes(a.octets()))
            });
            let port_ok =
                port.is_none_or(|p| ends.iter().any(|end| u16::from_be(end.port_be) == p));
            if !(addr_ok && port_ok) {
                continue;
            }
            rows.push(ConnectionView {
                protocol: protocol_name(key.proto),
                client: socket(flow.src.addr_be, flow.src.port_be),
                frontend: socket(flow.dst.addr_be, flow.dst.port_be),
                backend: socket(backend.addr_be, backend.port_be),
                translated_source: value
                    .is_snat()
                    .then(|| socket(value.peer_addr_be, value.peer_port_be)),
                service: self.service_name(value.service_id),
                state: lb_common::ct::state_name(value.state),
                age_seconds: u64::from(now.saturating_sub(value.created_s)),
                idle_seconds: u64::from(
                    now.saturating_sub(
                        last_seen
                            .get(&key.flow())
                            .copied()
                            .unwrap_or(value.last_seen_s),
                    ),
                ),
            });
        }
        rows.sort_by(|a, b| (&a.frontend, &a.client).cmp(&(&b.frontend, &b.client)));
        Ok(rows)
    }

    pub fn stats(&self) -> Result<StatsView, MapsError> {
        let row = |reason: &'static str, count| ReasonCount { reason, count };
        let reasons = self.maps.stats()?.into_iter();
        let reasons = reasons.map(|(r, n)| row(r.name(), n)).collect();
        let mut services = Vec::new();
        for (id, (name, _)) in &self.services {
            services.push(ServiceCountersView {
                service: name.to_string(),
                counters: self.maps.service_counters(*id)?.into(),
            });
        }
        let forwarded = self.maps.forward_stats()?.into_iter();
        let forwarded = forwarded.map(|(o, n)| row(o.name(), n)).collect();
        Ok(StatsView {
            reasons,
            services,
            forwarded,
        })
    }
}

pub fn backend_ref(be: &Backend4) -> BackendRef {
    let flags = backend_flags(be);
    BackendRef {
        address: socket(be.addr_be, be.port_be),
        state: if flags.terminating {
            "terminating"
        } else {
            "ready"
        },
        local: flags.local,
    }
}

pub fn socket(addr_be: u32, port_be: u16) -> String {
    socket_from_be(addr_be, port_be).to_string()
}

pub fn kind_name(value: &FrontendValue) -> &'static str {
    match frontend_entry(value).kind {
        Some(FrontendKind::ClusterIp) => "cluster-ip",
        Some(FrontendKind::NodePort) => "node-port",
        Some(FrontendKind::LoadBalancer) => "load-balancer",
        Some(FrontendKind::ExternalIp) => "external-ip",
        None => "unknown",
    }
}

/// `external` (XDP) or `internal` (socket hooks); a scope of another
/// version reads as internal, as it always did.
fn scope_name(key: &Frontend4Key) -> &'static str {
    match key_scope(key) {
        Some(Scope::External) => "external",
        Some(Scope::Internal) | None => "internal",
    }
}

fn policy(local: bool) -> &'static str {
    if local { "Local" } else { "Cluster" }
}
