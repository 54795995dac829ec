//! Putting a part into the merged state and taking it out again, and the
//! holders a part's computation may need, read once per update.

use std::collections::BTreeMap;

use super::{Unit, changes::PartKeys};
use crate::{
    desired::Holders,
    model::{DesiredState, Problem},
};

/// Adds one part; parts never share a frontend or a Service port (groups
/// that could are entangled into one part).
pub(super) fn contribute(
    state: &mut DesiredState,
    problems: &mut BTreeMap<Unit, Vec<Problem>>,
    unit: Unit,
    part: DesiredState,
) {
    state.frontends.extend(part.frontends);
    state.services.extend(part.services);
    if !part.problems.is_empty() {
        problems.insert(unit, part.problems);
    }
}

pub(super) fn withdraw(
    state: &mut DesiredState,
    problems: &mut BTreeMap<Unit, Vec<Problem>>,
    unit: Unit,
    part: &PartKeys,
) {
    for frontend in &part.frontends {
        state.frontends.remove(frontend);
    }
    for name in &part.services {
        state.services.remove(name);
    }
    problems.remove(&unit);
}

/// The holders, read from the maps only if some group needs them.
pub(super) struct LazyHolders<'a> {
    make: &'a dyn Fn() -> Holders,
    made: Option<Holders>,
}

impl<'a> LazyHolders<'a> {
    pub(super) fn new(make: &'a dyn Fn() -> Holders) -> LazyHolders<'a> {
        LazyHolders { make, made: None }
    }

    pub(super) fn get(&mut self) -> &Holders {
        self.made.get_or_insert_with(self.make)
    }
}
