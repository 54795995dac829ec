//! Who serves each frontend now: the input that lets the one that was
//! serving keep a frontend (or a name) when a newcomer claims it too. The
//! agent reads it from the pinned maps (`plan::Applied`), so a restarted
//! agent keeps the same owners; with none (a fresh node, the tests), the
//! older object wins, then the name that sorts first.

use std::{collections::BTreeMap, net::IpAddr};

use crate::model::{Frontend, ServicePortName};

/// The Service port each programmed frontend leads to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holders {
    frontends: BTreeMap<Frontend, ServicePortName>,
}

impl Holders {
    pub fn insert(&mut self, frontend: Frontend, service: ServicePortName) {
        self.frontends.insert(frontend, service);
    }

    pub fn is_empty(&self) -> bool {
        self.frontends.is_empty()
    }

    /// Every frontend with its Service port.
    pub fn iter(&self) -> impl Iterator<Item = (&Frontend, &ServicePortName)> {
        self.frontends.iter()
    }

    /// Whether `frontend` is programmed for `service` now.
    pub(super) fn holds(&self, frontend: &Frontend, service: &ServicePortName) -> bool {
        self.frontends.get(frontend) == Some(service)
    }

    /// Whether some frontend at `addr` is programmed for a port of the
    /// Service `namespace/name`.
    pub(super) fn holds_address(&self, addr: IpAddr, namespace: &str, name: &str) -> bool {
        self.frontends
            .iter()
            .any(|(f, s)| f.addr == addr && s.namespace == namespace && s.name == name)
    }
}

impl FromIterator<(Frontend, ServicePortName)> for Holders {
    fn from_iter<I: IntoIterator<Item = (Frontend, ServicePortName)>>(iter: I) -> Self {
        Holders {
            frontends: iter.into_iter().collect(),
        }
    }
}
