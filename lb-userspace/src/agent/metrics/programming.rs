//! Network programming latency, as kube-proxy measures it
//! (pkg/proxy/endpointschangetracker.go): from an EndpointSlice's
//! `endpoints.kubernetes.io/last-change-trigger-time` annotation, set by
//! the EndpointSlice controller to when the change that triggered it
//! happened, to the map write that made it effective.
//!
//! kube-proxy's rules, over snapshots instead of watch events:
//! - each new annotation value of a slice is observed once, after the sync
//!   that applied it succeeded (a failed sync keeps it for the retry);
//! - a value missing or not RFC 3339 is ignored, and so is one from before
//!   the agent started ("we can't estimate the network-programming-latency
//!   on those", upstream says of a restart);
//! - a deleted slice is forgotten: its annotation is by definition from its
//!   last update, not its deletion.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};

use crate::source::Slice;
use jiff::Timestamp;

/// The annotation the EndpointSlice controller sets.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// The trigger times already observed, by slice.
#[derive(Debug)]
pub struct TriggerTimes {
    started: Timestamp,
    /// The raw annotation each slice had at the last successful sync, by
    /// namespace and name (looked up with the slice's own strings: a sync
    /// at 10,000 slices allocates nothing for the unchanged ones).
    seen: HashMap<String, HashMap<String, String>>,
    seen_count: usize,
    /// The slices looked at by the last successful syncs, by address, and
    /// whether `seen` remembers each: a snapshot shares its unchanged
    /// slices (the same `Arc`) with the one before, so these need no
    /// lookup of their names and annotation (at 10,000 slices that walk
    /// took 5 ms of each sync). The `Weak` keeps the address from being
    /// reused by another slice while it is here.
    checked: HashMap<usize, (Weak<Slice>, bool)>,
    /// The last successful sync's slices in the snapshot's order, by
    /// address, with whether `seen` remembers each: a snapshot lists its
    /// slices in the same order as the one before when none came or went,
    /// so most are matched by position, a scan of two arrays (the lookup
    /// of 10,000 addresses, or of their names, misses the caches once
    /// other processes ran in between). Every address here is in
    /// `checked`, whose `Weak` keeps it from being reused.
    order: Vec<(usize, bool)>,
}

fn address(slice: &Arc<Slice>) -> usize {
    Arc::as_ptr(slice) as usize
}

fn name_of(slice: &Slice) -> (&str, &str) {
    let meta = &slice.metadata;
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    (namespace, meta.name.as_deref().unwrap_or_default())
}

/// What one sync would observe if it succeeds.
#[derive(Debug, Default)]
pub struct Pending {
    /// Slices whose annotation value is new (namespace, name, value) and
    /// its time (none: unusable, remembered but not observed).
    changed: Vec<(String, String, String, Option<Timestamp>)>,
    /// Every slice the snapshot holds, when some remembered slice is gone
    /// (then the remembered ones are pruned to these).
    present: Option<BTreeSet<(String, String)>>,
    /// The slices looked at, for `checked`, and whether they replace it
    /// whole (it held too many old addresses, or slices were forgotten).
    checked: Vec<(usize, Weak<Slice>, bool)>,
    check_all: bool,
    order: Vec<(usize, bool)>,
}

impl Default for TriggerTimes {
    fn default() -> Self {
        TriggerTimes::started_at(Timestamp::now())
    }
}

impl TriggerTimes {
    /// A tracker that ignores trigger times before `started`.
    pub fn started_at(started: Timestamp) -> TriggerTimes {
        TriggerTimes {
            started,
            seen: HashMap::new(),
            seen_count: 0,
            checked: HashMap::new(),
            order: Vec::new(),
        }
    }

    /// The slices of a snapshot whose trigger time this tracker has not
    /// observed yet: only the slices not looked at before are read.
    pub fn pending(&self, slices: &[Arc<Slice>]) -> Pending {
        // Old addresses (slices since changed) are dropped now and then.
        let stale = self.checked.len() > slices.len() + slices.len() / 8 + 64;
        let mut pending = self.pending_among(slices, stale);
        if !stale && pending.present.is_some() {
            // Slices were forgotten: `checked` is rebuilt with `seen`.
            pending = self.pending_among(slices, true);
        }
        pending
    }

    /// As [`Self::pending`]; `check_all`: every slice is read (and
    /// `checked` replaced).
    fn pending_among(&self, slices: &[Arc<Slice>], check_all: bool) -> Pending {
        let mut pending = Pending {
            check_all,
            order: Vec::with_capacity(slices.len()),
            ..Pending::default()
        };
        let mut remembered = 0;
        for (i, slice) in slices.iter().enumerate() {
            let at = address(slice);
            let looked_at = match self.order.get(i) {
                _ if check_all => None,
                Some(&(same, known)) if same == at => Some(known),
                _ => self.checked.get(&at).map(|(_, known)| *known),
            };
            if let Some(known) = looked_at {
                remembered += usize::from(known);
                pending.order.push((at, known));
                continue;
            }
            let (namespace, name) = name_of(slice);
            let known = self.seen.get(namespace).and_then(|names| names.get(name));
            remembered += usize::from(known.is_some());
            let raw = slice
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LAST_CHANGE_TRIGGER_TIME));
            if let Some(raw) = raw
                && known != Some(raw)
            {
                let time = raw.parse::<Timestamp>().ok().filter(|t| *t > self.started);
                let key = (namespace.to_owned(), name.to_owned());
                pending.changed.push((key.0, key.1, raw.clone(), time));
            }
            let remembered_after = known.is_some() || raw.is_some();
            pending
                .checked
                .push((at, Arc::downgrade(slice), remembered_after));
            pending.order.push((at, remembered_after));
        }
        if remembered < self.seen_count {
            let all = slices.iter().map(|s| name_of(s));
            let owned = all.map(|(ns, name)| (ns.to_owned(), name.to_owned()));
            pending.present = Some(owned.collect());
        }
        pending
    }

    /// The slice addresses kept (tests: they stay bounded).
    #[cfg(test)]
    pub(super) fn checked_len(&self) -> usize {
        self.checked.len()
    }

    /// The sync of `pending` reached the maps at `now`: the latency of each
    /// new trigger time, in seconds (never negative: a trigger time ahead
    /// of this node's clock is skew, not a negative latency).
    pub fn applied(&mut self, pending: Pending, now: Timestamp) -> Vec<f64> {
        if let Some(present) = &pending.present {
            for (namespace, names) in &mut self.seen {
                names.retain(|name, _| present.contains(&(namespace.clone(), name.clone())));
            }
            self.seen.retain(|_, names| !names.is_empty());
            self.seen_count = self.seen.values().map(HashMap::len).sum();
        }
        if pending.check_all {
            self.checked.clear();
        }
        for (at, slice, remembered) in pending.checked {
            self.checked.insert(at, (slice, remembered));
        }
        self.order = pending.order;
        let mut latencies = Vec::new();
        for (namespace, name, raw, time) in pending.changed {
            if let Some(time) = time {
                let seconds = now.duration_since(time).as_secs_f64();
                latencies.push(seconds.max(0.0));
            }
            let names = self.seen.entry(namespace).or_default();
            if names.insert(name, raw).is_none() {
                self.seen_count += 1;
            }
        }
        latencies
    }
}
