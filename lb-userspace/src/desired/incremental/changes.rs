//! What one update of the tracker changed: the frontends and Service ports
//! of every part it took out or put in, so the plan that follows visits
//! only those (`plan::Planner`).

use std::collections::BTreeSet;

use crate::model::{DesiredState, Frontend, ServicePortName};

/// The frontends and Service ports an update may have changed. Anything
/// not named here is as the previous update left it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Everything may have changed: the first update, new node facts, or
    /// one after [`Tracker::reset`](super::Tracker::reset).
    pub all: bool,
    /// Frontends of a part taken out or put in.
    pub frontends: BTreeSet<Frontend>,
    /// Service ports of a part taken out or put in.
    pub services: BTreeSet<ServicePortName>,
}

impl Changes {
    /// Everything may have changed.
    pub fn all() -> Changes {
        Changes {
            all: true,
            ..Changes::default()
        }
    }

    /// Records a part taken out or put in.
    pub(super) fn record(&mut self, part: &PartKeys) {
        if self.all {
            return;
        }
        self.frontends.extend(part.frontends.iter().copied());
        self.services.extend(part.services.iter().cloned());
    }
}

/// What the tracker keeps of a part once it is in the merged state: its
/// keys, to take it out again (the specs themselves live only in the
/// merged state, not twice). Sorted lists, not sets: a part has one or a
/// few of each, and a set's first node has room for eleven (a
/// `BTreeSet<ServicePortName>` of one port was 900 bytes a Service).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct PartKeys {
    pub(super) frontends: Box<[Frontend]>,
    /// The ports with a service entry and the owners of its frontends,
    /// sorted, each once.
    pub(super) services: Box<[ServicePortName]>,
}

impl PartKeys {
    pub(super) fn of(part: &DesiredState) -> PartKeys {
        let owners = part.frontends.values().map(|spec| &spec.service);
        let mut services: Vec<ServicePortName> =
            part.services.keys().chain(owners).cloned().collect();
        services.sort_unstable();
        services.dedup();
        PartKeys {
            frontends: part.frontends.keys().copied().collect(),
            services: services.into_boxed_slice(),
        }
    }
}
