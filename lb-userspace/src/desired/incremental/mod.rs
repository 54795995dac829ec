//! The desired state kept up to date per Service, the way kube-proxy's
//! change trackers work (pkg/proxy/servicechangetracker.go,
//! endpointschangetracker.go): only the Services whose objects changed are
//! recomputed, and the result is the one [`compute`] gives for the whole
//! snapshot (the property test in `tests.rs` holds it to that oracle).
//!
//! The unit is a group: one namespace/name's Service definitions and the
//! slices labelled for it (`inputs`). A group computed on its own gives
//! its part of the whole result unless it meets another group (`footprint`):
//! a frontend both claim (conflicts), or a ClusterIP that is the other's
//! endpoint address (captures). Groups that meet are *entangled*: they are
//! computed together, as one snapshot, at every update (their result
//! depends on each other and on who serves now), and stay entangled until
//! the next [`Tracker::reset`] (the periodic resync) sorts them out again.
//!
//! What falls back to more work than the changed group:
//! - different node facts: every group is recomputed (NodePorts, topology
//!   and locality read them everywhere);
//! - entangled groups: all of them, at every update;
//! - a group whose result reads the holders on its own (two definitions of
//!   one name, one frontend claimed by two of its ports, a ClusterIP that
//!   is its own endpoint address): that group, at every update, since who
//!   serves changes with each apply;
//! - [`Tracker::reset`]: everything, once.
//!
//! Finding the changed groups: `update` compares every group's version
//! (`inputs`); `update_shared`, for the reflector stores' shared objects,
//! looks up each object's address and reads only the new ones (`shared`),
//! so an update at 10,000 Services costs a pointer lookup per object plus
//! the changed groups. Each update reports what it changed (`changes`)
//! for the plan.
//!
//! Problems come out per group in namespace/name order (the whole
//! computation lists slice problems first): the same set, another order.
//!
//! [`compute`]: super::compute

mod by_name;
mod changes;
mod footprint;
mod held;
mod in_place;
mod inputs;
mod parts;
mod shared;

#[cfg(test)]
mod tests;

use std::{
    borrow::Borrow,
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use k8s_openapi::api::core::v1::Service;

use crate::source::Slice;

use self::changes::PartKeys;
use self::{
    by_name::ByName,
    footprint::Overlaps,
    inputs::{GroupInputs, GroupKey, Groups},
    parts::{LazyHolders, contribute, withdraw},
    shared::{ContentMemo, SharedObjects, versioned},
};
pub use self::{changes::Changes, footprint::Footprint};
use super::{Holders, Rules, compute_with_footprint};
use crate::model::{DesiredState, NodeFacts, Problem};

/// What contributed a part of the state.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Unit {
    Group(GroupKey),
    Entangled,
}

/// One group as last computed on its own.
struct Group {
    version: u64,
    footprint: Footprint,
    /// Its part's keys (its specs are in the merged state only).
    solo: PartKeys,
}

/// How much the last update recomputed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpdateStats {
    /// Groups computed on their own.
    pub recomputed: usize,
    /// Groups computed together because they meet.
    pub entangled: usize,
    /// The node facts changed (or this is the first update): everything.
    pub full: bool,
}

/// The desired state of the last snapshot, updated per changed Service.
pub struct Tracker {
    rules: Rules,
    node: Option<NodeFacts>,
    groups: ByName<String, Group>,
    overlaps: Overlaps,
    entangled: BTreeSet<GroupKey>,
    entangled_state: PartKeys,
    /// Solo groups whose result reads the holders.
    reads_holders: BTreeSet<GroupKey>,
    state: DesiredState,
    problems: BTreeMap<Unit, Vec<Problem>>,
    stats: UpdateStats,
    changes: Changes,
    /// The objects of the last shared snapshot (`update_shared`).
    shared: Option<SharedObjects>,
    /// The content hashes of the last shared snapshot's unversioned objects.
    content: Option<ContentMemo>,
}

impl Tracker {
    pub fn new(rules: Rules) -> Tracker {
        Tracker {
            rules,
            node: None,
            groups: ByName::default(),
            overlaps: Overlaps::default(),
            entangled: BTreeSet::new(),
            entangled_state: PartKeys::default(),
            reads_holders: BTreeSet::new(),
            state: DesiredState::default(),
            problems: BTreeMap::new(),
            stats: UpdateStats::default(),
            changes: Changes::all(),
            shared: None,
            content: None,
        }
    }

    /// Forgets everything: the next update computes every group again.
    pub fn reset(&mut self) {
        *self = Tracker::new(self.rules.clone());
    }

    pub fn stats(&self) -> UpdateStats {
        self.stats
    }

    /// What the last update changed.
    pub fn changes(&self) -> &Changes {
        &self.changes
    }

    /// The last update's state and what it changed.
    pub fn last(&self) -> (&DesiredState, &Changes) {
        (&self.state, &self.changes)
    }

    /// The desired state of this snapshot: what [`compute`](super::compute)
    /// gives for it, problems aside in order. `holders` is called at most
    /// once, and only when some recomputed group's result reads them.
    pub fn update(
        &mut self,
        services: &[impl Borrow<Service>],
        slices: &[impl Borrow<Slice>],
        node: &NodeFacts,
        holders: &dyn Fn() -> Holders,
    ) -> &DesiredState {
        let full = self.begin(node);
        (self.shared, self.content) = (None, None);
        let inputs = inputs::group(services, slices);
        let changed = self.changed(&inputs);
        self.apply_changes(&inputs, &changed, holders, full);
        &self.state
    }

    /// [`update`](Tracker::update) for a snapshot of shared objects (the
    /// reflector stores' own): the objects still at the addresses the last
    /// snapshot held are unchanged, so only the changed groups' objects
    /// are read (`shared`). Objects without versions take `update`'s path.
    pub fn update_shared(
        &mut self,
        services: &[Arc<Service>],
        slices: &[Arc<Slice>],
        node: &NodeFacts,
        holders: &dyn Fn() -> Holders,
    ) -> &DesiredState {
        let full = self.begin(node);
        let baseline = self.shared.take();
        let known = baseline.is_some();
        let mut shared = baseline.unwrap_or_default();
        let changed = shared.changed(services, slices);
        let Some(mut changed) = changed.filter(|_| known) else {
            // No baseline to compare with (the first shared snapshot, or
            // after objects without versions): the general path, which
            // seeds the baseline if these objects have versions.
            let versioned = services.iter().all(|s| versioned(&s.metadata))
                && slices.iter().all(|s| versioned(&s.metadata));
            if !versioned && !full && self.update_in_place(services, slices, holders) {
                return &self.state;
            }
            let memo = match versioned {
                true => ContentMemo::default(),
                false => self
                    .content
                    .take()
                    .unwrap_or_default()
                    .refresh(services, slices),
            };
            let inputs = inputs::group_with(services, slices, &|address| memo.get(address));
            let changed = self.changed(&inputs);
            self.apply_changes(&inputs, &changed, holders, full);
            drop(inputs);
            self.shared = versioned.then_some(shared);
            self.content = (!versioned).then_some(memo);
            return &self.state;
        };
        changed.extend(self.reads_holders.iter().cloned());
        let mut holders = LazyHolders::new(holders);
        let (their_services, their_slices) = shared.objects_of(&changed);
        let inputs = inputs::group(&their_services, &their_slices);
        let recomputed = self.recompute_changed(&inputs, &changed, &mut holders);
        drop(inputs);
        // Only now is it known which groups are entangled.
        let (their_services, their_slices) = shared.objects_of(&self.entangled);
        let inputs = inputs::group(&their_services, &their_slices);
        let entangled = self.recompute_entangled(&inputs, &mut holders);
        drop(inputs);
        self.finish(recomputed, entangled, full);
        self.shared = Some(shared);
        &self.state
    }

    /// Starts an update: everything is recomputed when the node's facts
    /// differ (or nothing was computed yet). Returns whether it is so.
    fn begin(&mut self, node: &NodeFacts) -> bool {
        let full = self.node.as_ref() != Some(node);
        if full {
            self.reset();
            self.node = Some(node.clone());
        }
        self.changes = if full {
            Changes::all()
        } else {
            Changes::default()
        };
        full
    }

    /// Recomputes the `changed` groups (of `inputs`) and the entangled ones.
    fn apply_changes(
        &mut self,
        inputs: &Groups<'_>,
        changed: &BTreeSet<GroupKey>,
        holders: &dyn Fn() -> Holders,
        full: bool,
    ) {
        let mut holders = LazyHolders::new(holders);
        let recomputed = self.recompute_changed(inputs, changed, &mut holders);
        let entangled = self.recompute_entangled(inputs, &mut holders);
        self.finish(recomputed, entangled, full);
    }

    /// Takes the changed groups out and puts in the new parts of those that
    /// still exist; returns how many.
    fn recompute_changed(
        &mut self,
        inputs: &Groups<'_>,
        changed: &BTreeSet<GroupKey>,
        holders: &mut LazyHolders,
    ) -> usize {
        self.withdraw_changed(changed);
        let mut recomputed = 0;
        for key in changed {
            if let Some(group) = inputs.get(&key.0, &key.1) {
                self.recompute(key, group, holders);
                recomputed += 1;
            }
        }
        recomputed
    }

    fn finish(&mut self, recomputed: usize, entangled: usize, full: bool) {
        self.stats = UpdateStats {
            recomputed,
            entangled,
            full,
        };
        self.state.problems = self.merged_problems();
    }

    /// Groups whose version differs, that appeared or vanished, plus the
    /// solo groups that read the holders.
    fn changed(&self, inputs: &Groups<'_>) -> BTreeSet<GroupKey> {
        let mut present = 0;
        let mut changed = BTreeSet::new();
        for (namespace, name, group) in inputs.iter() {
            let known = self.groups.get(namespace, name).map(|g| g.version);
            present += usize::from(known.is_some());
            if known != Some(group.version()) {
                changed.insert((namespace.to_owned(), name.to_owned()));
            }
        }
        if present < self.groups.len() {
            let vanished = self
                .groups
                .iter()
                .filter(|(ns, name, _)| !inputs.contains(ns, name));
            changed.extend(vanished.map(|(ns, name, _)| (ns.to_owned(), name.to_owned())));
        }
        changed.extend(self.reads_holders.iter().cloned());
        changed
    }

    /// Takes every changed group's part (and the entangled one, recomputed
    /// at every update) out of the state before any new part goes in, so a
    /// frontend that moves between groups is never removed after it was
    /// added.
    fn withdraw_changed(&mut self, changed: &BTreeSet<GroupKey>) {
        for key in changed {
            self.reads_holders.remove(key);
            let Some(old) = self.groups.remove(&key.0, &key.1) else {
                continue;
            };
            self.overlaps.remove(key, &old.footprint);
            if !self.entangled.remove(key) {
                self.changes.record(&old.solo);
                withdraw(
                    &mut self.state,
                    &mut self.problems,
                    Unit::Group(key.clone()),
                    &old.solo,
                );
            } else {
                // Still entangled if it still exists: `recompute` decides.
                self.entangled.insert(key.clone());
            }
        }
        let old = std::mem::take(&mut self.entangled_state);
        self.changes.record(&old);
        withdraw(&mut self.state, &mut self.problems, Unit::Entangled, &old);
    }

    fn recompute(&mut self, key: &GroupKey, group: &GroupInputs<'_>, holders: &mut LazyHolders) {
        let (services, slices) = (&group.services, &group.slices);
        let node = self.node.clone().unwrap_or_default();
        let mut result =
            compute_with_footprint(services, slices, &node, &self.rules, &Holders::default());
        let reads_holders = result.1.reads_holders();
        if reads_holders {
            result = compute_with_footprint(services, slices, &node, &self.rules, holders.get());
        }
        let (solo, footprint) = result;
        let keys = PartKeys::of(&solo);
        let met = self.overlaps.met_by(key, &footprint);
        self.overlaps.insert(key, &footprint);
        if self.entangled.contains(key) || !met.is_empty() {
            for other in met {
                self.entangle(other);
            }
            self.entangled.insert(key.clone());
        } else {
            if reads_holders {
                self.reads_holders.insert(key.clone());
            }
            self.changes.record(&keys);
            contribute(
                &mut self.state,
                &mut self.problems,
                Unit::Group(key.clone()),
                solo,
            );
        }
        let version = group.version();
        self.groups.insert(
            key.0.clone(),
            key.1.clone(),
            Group {
                version,
                footprint,
                solo: keys,
            },
        );
    }

    /// Moves a solo group into the entangled set, taking its part out.
    fn entangle(&mut self, key: GroupKey) {
        if !self.entangled.insert(key.clone()) {
            return;
        }
        self.reads_holders.remove(&key);
        if let Some(group) = self.groups.get(&key.0, &key.1) {
            self.changes.record(&group.solo);
            withdraw(
                &mut self.state,
                &mut self.problems,
                Unit::Group(key),
                &group.solo,
            );
        }
    }

    /// Computes the entangled groups together; returns how many there are.
    fn recompute_entangled(&mut self, inputs: &Groups<'_>, holders: &mut LazyHolders) -> usize {
        self.entangled
            .retain(|(ns, name)| inputs.contains(ns, name));
        if self.entangled.is_empty() {
            return 0;
        }
        let (mut services, mut slices) = (Vec::new(), Vec::new());
        for key in &self.entangled {
            let Some(group) = inputs.get(&key.0, &key.1) else {
                continue;
            };
            services.extend(group.services.iter().copied());
            slices.extend(group.slices.iter().copied());
        }
        let node = self.node.clone().unwrap_or_default();
        let (state, _) =
            compute_with_footprint(&services, &slices, &node, &self.rules, holders.get());
        let keys = PartKeys::of(&state);
        self.changes.record(&keys);
        contribute(&mut self.state, &mut self.problems, Unit::Entangled, state);
        self.entangled_state = keys;
        self.entangled.len()
    }

    /// Every part's problems, in part order, each (object, reason) once as
    /// the whole computation reports them.
    fn merged_problems(&self) -> Vec<Problem> {
        let mut seen = BTreeSet::new();
        self.problems
            .values()
            .flatten()
            .filter(|p| seen.insert((p.object.clone(), p.reason.clone())))
            .cloned()
            .collect()
    }
}
