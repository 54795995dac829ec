//! The connection table's metrics, written by the sweep (`agent::ct_sweep`):
//! - `lb_ct_entries{state}`: live flows by state at the last sweep (one flow
//!   counts once, whatever its two entries);
//! - `lb_ct_expired_total`: flows the sweep removed because they expired
//!   (each has two entries);
//! - `lb_ct_sweep_duration_seconds`: how long the last sweep took;
//! - `lb_ct_new_flows_per_second`: new flows over the last sweep period;
//! - `lb_ct_flood`: 1 while new flows overrun the new-flow table within a
//!   sweep period (a flood: unassured flows displace each other; assured
//!   ones are untouched), else 0.
//!
//! Evictions by the kernel's LRU and refused inserts are packet reasons
//! (`lb_packets_total{reason="drop_ct_insert_failed"}`,
//! `{reason="ct_promoted"}` ...), read from the datapath at each scrape;
//! the tables' fill is `lb_map_entries{map="connections"|"new_connections"}`.

use std::sync::atomic::AtomicU64;

use lb_common::ct::{
    CT_CLOSED, CT_CLOSING, CT_ESTABLISHED, CT_REPLIED, CT_SCTP_COOKIE_ECHOED, CT_SCTP_COOKIE_WAIT,
    CT_SCTP_ESTABLISHED, CT_SCTP_SHUTDOWN, CT_STREAM, CT_SYN_RECV, CT_SYN_SENT, CT_UNREPLIED,
    state_name,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Every state a flow can be in, for gauges present at 0.
pub const STATES: [u8; 12] = [
    CT_SYN_SENT,
    CT_SYN_RECV,
    CT_ESTABLISHED,
    CT_CLOSING,
    CT_CLOSED,
    CT_UNREPLIED,
    CT_REPLIED,
    CT_STREAM,
    CT_SCTP_COOKIE_WAIT,
    CT_SCTP_COOKIE_ECHOED,
    CT_SCTP_ESTABLISHED,
    CT_SCTP_SHUTDOWN,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Default)]
pub struct CtMetrics {
    entries: Family<StateLabel, Gauge>,
    expired: Counter,
    sweep_seconds: Gauge<f64, AtomicU64>,
    new_flow_rate: Gauge<f64, AtomicU64>,
    flood: Gauge,
}

impl CtMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        for state in STATES {
            let _ = self.entries.get_or_create(&StateLabel {
                state: state_name(state),
            });
        }
        registry.register(
            "lb_ct_entries",
            "Live flows in the connection table by state, at the last sweep",
            self.entries.clone(),
        );
        registry.register(
            "lb_ct_expired",
            "Flows the sweep removed from the connection table because they expired",
            self.expired.clone(),
        );
        registry.register(
            "lb_ct_new_flows_per_second",
            "New flows the datapath entered per second, over the last sweep period",
            self.new_flow_rate.clone(),
        );
        registry.register(
            "lb_ct_flood",
            "1 while new flows overrun the connection table of new flows (a flood), else 0",
            self.flood.clone(),
        );
        registry.register(
            "lb_ct_sweep_duration_seconds",
            "How long the last sweep of the connection table took",
            self.sweep_seconds.clone(),
        );
    }

    /// One sweep's outcome: live flows per state, flows expired, its duration.
    pub fn swept(&self, live: &[(u8, u64)], expired: u64, seconds: f64) {
        for state in STATES {
            let count = live
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.entries
                .get_or_create(&StateLabel {
                    state: state_name(state),
                })
                .set(count as i64);
        }
        self.expired.inc_by(expired);
        self.sweep_seconds.set(seconds);
    }

    /// The new-flow rate of the last period, and whether it was a flood.
    pub fn new_flows(&self, per_second: f64, flood: bool) {
        self.new_flow_rate.set(per_second);
        self.flood.set(i64::from(flood));
    }
}
