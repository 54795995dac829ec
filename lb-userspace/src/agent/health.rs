//! `/healthz` and `/livez` as kube-proxy serves them
//! (pkg/proxy/healthcheck/proxy_health.go), on `--healthz-bind-address`
//! (default `0.0.0.0:10256`), so existing probes keep working.
//!
//! - A change the source reports is *queued* ([`Health::queued_update`]);
//!   a sync that applies is an *update* ([`Health::updated`]), which
//!   clears the queue. Only the oldest queued change counts.
//! - Healthy while nothing is queued (starting up, or fully synced), or
//!   while the oldest queued change is younger than the health timeout:
//!   kube-proxy's is twice the sync period (cmd/kube-proxy/app/server.go),
//!   so is ours. A sync that fails keeps the change queued, and once it is
//!   that old the answer is 503.
//! - `/healthz` is also 503 when the node is not eligible (being deleted,
//!   or tainted `ToBeDeletedByClusterAutoscaler`), so load balancers drain
//!   it; `/livez` ignores the node: a node being drained is not a reason
//!   to restart the agent.
//! - The body is upstream's JSON, byte for byte in shape: `lastUpdated`
//!   and `currentTime` in Go's `time.Time` text form, and for `/healthz`
//!   `nodeEligible`. While healthy, `lastUpdated` is the current time (as
//!   upstream, for compatibility with releases that updated it every loop).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use anyhow::Result;
use hyper::StatusCode;
use tokio::time::Instant;

use super::{http, metrics::Metrics};

/// The state the sync loop updates and the health endpoint reads.
#[derive(Debug)]
pub struct Health {
    timeout: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    last_updated: Option<SystemTime>,
    oldest_queued: Option<Instant>,
    node_eligible: bool,
}

impl Health {
    /// `timeout`: how long a queued change may wait for a successful sync
    /// (kube-proxy: twice the sync period).
    pub fn new(timeout: Duration) -> Arc<Health> {
        Arc::new(Health {
            timeout,
            state: Mutex::new(State {
                last_updated: None,
                oldest_queued: None,
                // Eligible while starting up, until the Node says otherwise.
                node_eligible: true,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A change arrived that a sync must apply; only the oldest counts.
    pub fn queued_update(&self) {
        self.state().oldest_queued.get_or_insert_with(Instant::now);
    }

    /// A sync applied everything queued so far.
    pub fn updated(&self) {
        let mut state = self.state();
        state.oldest_queued = None;
        state.last_updated = Some(SystemTime::now());
    }

    /// Whether the node may receive traffic (see [`node_eligible`]).
    pub fn set_node_eligible(&self, eligible: bool) {
        self.state().node_eligible = eligible;
    }

    /// The agent's own health, the node aside (what `/livez` answers).
    pub fn is_healthy(&self) -> bool {
        let state = self.state();
        state
            .oldest_queued
            .is_none_or(|queued| queued.elapsed() < self.timeout)
    }

    /// The status and body of `/healthz` (with the node) or `/livez`.
    fn answer(&self, with_node: bool) -> (StatusCode, String) {
        let healthy = self.is_healthy();
        let (last_updated, node_eligible) = {
            let state = self.state();
            (state.last_updated, state.node_eligible)
        };
        let healthy = healthy && (!with_node || node_eligible);
        let now = SystemTime::now();
        let last_updated = if healthy { Some(now) } else { last_updated };
        let (last, current) = (go_time(last_updated), go_time(Some(now)));
        let status = if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = if with_node {
            format!(
                r#"{{"lastUpdated": "{last}","currentTime": "{current}", "nodeEligible": {node_eligible}}}"#
            )
        } else {
            format!(r#"{{"lastUpdated": "{last}","currentTime": "{current}"}}"#)
        };
        (status, body)
    }
}

/// Go's `time.Time.String()` in UTC (`2006-01-02 15:04:05.999999999 +0000
/// UTC`, trailing zeros of the fraction dropped); none: Go's zero time.
fn go_time(time: Option<SystemTime>) -> String {
    let Some(timestamp) = time.and_then(|t| jiff::Timestamp::try_from(t).ok()) else {
        return "0001-01-01 00:00:00 +0000 UTC".to_owned();
    };
    timestamp
        .strftime("%Y-%m-%d %H:%M:%S%.f +0000 UTC")
        .to_string()
}

/// Binds `address` now and serves `/healthz` and `/livez` in the
/// background; each answer is counted in `kubeproxy_proxy_healthz_total`
/// or `kubeproxy_proxy_livez_total` by code, as upstream counts them.
pub async fn serve(
    address: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> Result<SocketAddr> {
    let handler: http::Handler = Arc::new(move |path| {
        let with_node = match path {
            "/healthz" => true,
            "/livez" => false,
            _ => {
                return http::respond(
                    StatusCode::NOT_FOUND,
                    "text/plain; charset=utf-8",
                    "not found: try /healthz or /livez\n",
                );
            }
        };
        let (status, body) = health.answer(with_node);
        metrics.count_probe(with_node, status.as_u16());
        http::respond(status, "application/json", body)
    });
    http::serve(address, "health", "--healthz-bind-address", handler).await
}

#[cfg(test)]
mod tests;
