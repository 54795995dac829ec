//! Which Service ports use each backend, with which flags: the desired
//! state's side of a backend's map value (a flag holds only if it holds for
//! every frontend using the backend, `BackendFlags::both`), kept across
//! plans so that planning a few changed ports still gives the backends
//! they share with unchanged ports the flags the whole state gives them.
//!
//! Two kinds of reference hold a backend in the map: a frontend's chosen
//! set (its table names it) and a port's listing (its EndpointSlices list
//! it, whatever its conditions: `ServicePortInfo::listed`). A backend only
//! listed keeps the default flags (no frontend selects it). The listings
//! of UDP ports also say which flows kube-proxy's conntrack cleanup clears
//! (`stale_udp`).

use std::collections::{BTreeMap, BTreeSet};

// foldhash: a full sync at 10,000 Services builds both maps whole
// (10,000 ports, 100,000 backends), and SipHash, std's default, was a
// good part of it.
use foldhash::HashMap;

use crate::{
    datapath::codec::BackendFlags,
    desired::incremental::Changes,
    model::{Backend, DesiredState, Frontend, FrontendSpec, Listed, Protocol, ServicePortName},
};

/// How many (frontend, endpoint) pairs use a backend, and with which flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FlagCount {
    users: u32,
    terminating: u32,
    local: u32,
    remote: u32,
    /// Service ports whose EndpointSlices list it.
    listed: u32,
}

impl FlagCount {
    fn add(&mut self, other: FlagCount) {
        self.users += other.users;
        self.terminating += other.terminating;
        self.local += other.local;
        self.remote += other.remote;
        self.listed += other.listed;
    }

    fn subtract(&mut self, other: FlagCount) {
        self.users -= other.users;
        self.terminating -= other.terminating;
        self.local -= other.local;
        self.remote -= other.remote;
        self.listed -= other.listed;
    }

    fn flags(&self) -> BackendFlags {
        if self.users == 0 {
            return BackendFlags::default();
        }
        BackendFlags {
            terminating: self.terminating == self.users,
            local: self.local == self.users,
            remote: self.remote == self.users,
        }
    }
}

/// One Service port's frontends (in order) and the backends they use.
#[derive(Debug, Default, PartialEq)]
struct PortUse {
    frontends: Vec<Frontend>,
    backends: Vec<(Backend, FlagCount)>,
    /// A UDP port's serving endpoints (kube-proxy's `IsServing`), the
    /// flows to the others are stale; empty for other protocols.
    serving_udp: Vec<Backend>,
}

impl PortUse {
    fn of<'a>(
        frontends: impl Iterator<Item = (&'a Frontend, &'a FrontendSpec)>,
        listed: &[Listed],
        udp: bool,
    ) -> PortUse {
        let mut port = PortUse::default();
        let mut backends: BTreeMap<Backend, FlagCount> = BTreeMap::new();
        for endpoint in listed {
            backends.entry(endpoint.backend).or_default().listed = 1;
            if udp && endpoint.serving {
                port.serving_udp.push(endpoint.backend);
            }
        }
        for (frontend, spec) in frontends {
            port.frontends.push(*frontend);
            for endpoint in &spec.endpoints {
                backends
                    .entry(endpoint.backend)
                    .or_default()
                    .add(FlagCount {
                        users: 1,
                        terminating: u32::from(endpoint.terminating),
                        local: u32::from(endpoint.local),
                        remote: u32::from(endpoint.remote),
                        listed: 0,
                    });
            }
        }
        port.backends = backends.into_iter().collect();
        port
    }
}

#[derive(Debug, Default, PartialEq)]
pub(super) struct Usage {
    ports: HashMap<ServicePortName, PortUse>,
    backends: HashMap<Backend, FlagCount>,
}

impl Usage {
    /// The use of every Service port of `desired`.
    pub(super) fn build(desired: &DesiredState) -> Usage {
        let mut by_port: HashMap<&ServicePortName, Vec<(&Frontend, &FrontendSpec)>> =
            HashMap::default();
        for (frontend, spec) in &desired.frontends {
            by_port
                .entry(&spec.service)
                .or_default()
                .push((frontend, spec));
        }
        let mut usage = Usage::default();
        // Each port's listing read in passing: looked up by name, each
        // port cost a dozen string comparisons across the B-tree.
        for (service, info) in &desired.services {
            if let Some(frontends) = by_port.remove(service) {
                let udp = service.protocol == Protocol::Udp;
                let port = PortUse::of(frontends.into_iter(), &info.listed, udp);
                usage.insert(service.clone(), port);
            }
        }
        for (service, frontends) in by_port {
            let port = port_use(desired, service, frontends);
            usage.insert(service.clone(), port);
        }
        usage
    }

    /// Replaces the use of the ports `changes` names with what `desired`
    /// says now; returns every backend whose users changed, and adds to
    /// `stale` the UDP flows the change makes stale (`stale_udp`).
    pub(super) fn update(
        &mut self,
        desired: &DesiredState,
        changes: &Changes,
        stale: &mut Vec<(ServicePortName, Backend)>,
    ) -> BTreeSet<Backend> {
        let mut now: BTreeMap<&ServicePortName, Vec<(&Frontend, &FrontendSpec)>> = BTreeMap::new();
        for frontend in &changes.frontends {
            if let Some((frontend, spec)) = desired.frontends.get_key_value(frontend) {
                now.entry(&spec.service).or_default().push((frontend, spec));
            }
        }
        let mut touched = BTreeSet::new();
        let services: BTreeSet<&ServicePortName> =
            changes.services.iter().chain(now.keys().copied()).collect();
        for service in services {
            let old = self.ports.remove(service);
            if let Some(old) = &old {
                for (backend, count) in &old.backends {
                    self.subtract(*backend, *count);
                    touched.insert(*backend);
                }
            }
            if let Some(frontends) = now.remove(service) {
                let port = port_use(desired, service, frontends);
                touched.extend(port.backends.iter().map(|(backend, _)| *backend));
                let gone = stale_udp(old.as_ref(), &port);
                stale.extend(gone.map(|backend| (service.clone(), backend)));
                self.insert(service.clone(), port);
            }
        }
        touched
    }

    /// The UDP flows that became stale from `old` to `self` (the whole
    /// desired state planned again): `stale_udp` of every port.
    pub(super) fn stale_since(&self, old: &Usage) -> Vec<(ServicePortName, Backend)> {
        let mut stale = Vec::new();
        for (service, port) in &self.ports {
            let gone = stale_udp(old.ports.get(service), port);
            stale.extend(gone.map(|backend| (service.clone(), backend)));
        }
        stale.sort();
        stale
    }

    /// A UDP port's serving endpoints (`None`: no such port in use).
    pub(super) fn serving_udp(&self, service: &ServicePortName) -> Option<&[Backend]> {
        self.ports
            .get(service)
            .map(|port| port.serving_udp.as_slice())
    }

    /// Whether nothing is in use (no plan yet).
    pub(super) fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// Whether a Service port other than `scope`'s lists `backend`.
    pub(super) fn listed_outside(
        &self,
        backend: &Backend,
        scope: &BTreeSet<&ServicePortName>,
    ) -> bool {
        let Some(total) = self.backends.get(backend) else {
            return false;
        };
        let inside = scope
            .iter()
            .filter_map(|service| self.ports.get(*service))
            .filter(|port| {
                port.backends
                    .binary_search_by_key(backend, |(b, _)| *b)
                    .is_ok_and(|i| port.backends[i].1.listed > 0)
            })
            .count() as u32;
        total.listed > inside
    }

    fn insert(&mut self, service: ServicePortName, port: PortUse) {
        for (backend, count) in &port.backends {
            self.backends.entry(*backend).or_default().add(*count);
        }
        self.ports.insert(service, port);
    }

    fn subtract(&mut self, backend: Backend, count: FlagCount) {
        if let Some(total) = self.backends.get_mut(&backend) {
            total.subtract(count);
            if total.users == 0 && total.listed == 0 {
                self.backends.remove(&backend);
            }
        }
    }

    /// The flags of a backend the desired state uses.
    pub(super) fn flags(&self, backend: &Backend) -> Option<BackendFlags> {
        self.backends.get(backend).map(FlagCount::flags)
    }

    /// A Service port's frontends, in the desired state's order.
    pub(super) fn frontends_of(&self, service: &ServicePortName) -> &[Frontend] {
        self.ports
            .get(service)
            .map_or(&[], |port| port.frontends.as_slice())
    }
}

/// One port's use, from its frontends and its listing.
fn port_use<'a>(
    desired: &'a DesiredState,
    service: &ServicePortName,
    frontends: Vec<(&'a Frontend, &'a FrontendSpec)>,
) -> PortUse {
    let listed = super::diff::listed_of(desired, service);
    let udp = service.protocol == Protocol::Udp;
    PortUse::of(frontends.into_iter(), listed, udp)
}

/// kube-proxy's UDP conntrack cleanup (pkg/proxy/conntrack/cleanup.go,
/// `CleanStaleEntries`): a UDP Service port's flows to an endpoint that is
/// not one of its serving endpoints are cleared, whatever the traffic
/// policies, topology or terminating state ("Changes to the service should
/// not affect existing flows"), and a port without any serving endpoint
/// keeps its flows ("a Service without endpoints does not require to clean
/// the conntrack entries"). The maps know no flow by endpoint condition, so
/// the stale ones are those to the endpoints that were serving before
/// (`old`) and are not now.
fn stale_udp<'a>(old: Option<&'a PortUse>, new: &'a PortUse) -> impl Iterator<Item = Backend> + 'a {
    let before = old.map_or(&[][..], |port| port.serving_udp.as_slice());
    let keeps = new.serving_udp.is_empty();
    before
        .iter()
        .filter(move |backend| !keeps && new.serving_udp.binary_search(backend).is_err())
        .copied()
}
