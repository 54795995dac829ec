//! Which Service ports use each backend, with which flags: the desired
//! state's side of a backend's map value (a flag holds only if it holds for
//! every frontend using the backend, `BackendFlags::both`), kept across
//! plans so that planning a few changed ports still gives the backends
//! they share with unchanged ports the flags the whole state gives them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::{
    datapath::codec::BackendFlags,
    desired::incremental::Changes,
    model::{Backend, DesiredState, Frontend, FrontendSpec, ServicePortName},
};

/// How many (frontend, endpoint) pairs use a backend, and with which flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FlagCount {
    users: u32,
    terminating: u32,
    local: u32,
    remote: u32,
}

impl FlagCount {
    fn add(&mut self, other: FlagCount) {
        self.users += other.users;
        self.terminating += other.terminating;
        self.local += other.local;
        self.remote += other.remote;
    }

    fn subtract(&mut self, other: FlagCount) {
        self.users -= other.users;
        self.terminating -= other.terminating;
        self.local -= other.local;
        self.remote -= other.remote;
    }

    fn flags(&self) -> BackendFlags {
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
}

impl PortUse {
    fn of<'a>(frontends: impl Iterator<Item = (&'a Frontend, &'a FrontendSpec)>) -> PortUse {
        let mut port = PortUse::default();
        let mut backends: BTreeMap<Backend, FlagCount> = BTreeMap::new();
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
        let mut by_port: BTreeMap<&ServicePortName, Vec<(&Frontend, &FrontendSpec)>> =
            BTreeMap::new();
        for (frontend, spec) in &desired.frontends {
            by_port
                .entry(&spec.service)
                .or_default()
                .push((frontend, spec));
        }
        let mut usage = Usage::default();
        for (service, frontends) in by_port {
            usage.insert(service.clone(), PortUse::of(frontends.into_iter()));
        }
        usage
    }

    /// Replaces the use of the ports `changes` names with what `desired`
    /// says now; returns every backend whose users changed.
    pub(super) fn update(
        &mut self,
        desired: &DesiredState,
        changes: &Changes,
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
            if let Some(old) = self.ports.remove(service) {
                for (backend, count) in old.backends {
                    self.subtract(backend, count);
                    touched.insert(backend);
                }
            }
            if let Some(frontends) = now.remove(service) {
                let port = PortUse::of(frontends.into_iter());
                touched.extend(port.backends.iter().map(|(backend, _)| *backend));
                self.insert(service.clone(), port);
            }
        }
        touched
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
            if total.users == 0 {
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
