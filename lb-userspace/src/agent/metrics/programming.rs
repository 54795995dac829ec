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

use std::borrow::Borrow;
use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The annotation the EndpointSlice controller sets.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// The trigger times already observed, by slice.
#[derive(Debug)]
pub struct TriggerTimes {
    started: Timestamp,
    /// The raw annotation each slice had at the last successful sync.
    seen: BTreeMap<String, String>,
}

/// What one sync would observe if it succeeds.
#[derive(Debug, Default)]
pub struct Pending {
    /// Slices whose annotation value is new, with the value and its time
    /// (none: unusable, remembered but not observed).
    changed: Vec<(String, String, Option<Timestamp>)>,
    /// Every slice the snapshot holds.
    present: Vec<String>,
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
            seen: BTreeMap::new(),
        }
    }

    /// The slices of a snapshot whose trigger time this tracker has not
    /// observed yet.
    pub fn pending(&self, slices: &[impl Borrow<EndpointSlice>]) -> Pending {
        let mut pending = Pending::default();
        for slice in slices.iter().map(Borrow::borrow) {
            let key = format!(
                "{}/{}",
                slice.metadata.namespace.as_deref().unwrap_or_default(),
                slice.metadata.name.as_deref().unwrap_or_default()
            );
            let raw = slice
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LAST_CHANGE_TRIGGER_TIME));
            if let Some(raw) = raw
                && self.seen.get(&key) != Some(raw)
            {
                let time = raw.parse::<Timestamp>().ok().filter(|t| *t > self.started);
                pending.changed.push((key.clone(), raw.clone(), time));
            }
            pending.present.push(key);
        }
        pending
    }

    /// The sync of `pending` reached the maps at `now`: the latency of each
    /// new trigger time, in seconds (never negative: a trigger time ahead
    /// of this node's clock is skew, not a negative latency).
    pub fn applied(&mut self, pending: Pending, now: Timestamp) -> Vec<f64> {
        let present: std::collections::BTreeSet<&String> = pending.present.iter().collect();
        self.seen.retain(|key, _| present.contains(key));
        let mut latencies = Vec::new();
        for (key, raw, time) in pending.changed {
            if let Some(time) = time {
                let seconds = now.duration_since(time).as_secs_f64();
                latencies.push(seconds.max(0.0));
            }
            self.seen.insert(key, raw);
        }
        latencies
    }
}
