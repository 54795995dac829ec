//! `lb affinity list`: the session-affinity entries (`sessionAffinity:
//! ClientIP`) in Kubernetes terms: which client is kept on which backend
//! of which Service port, how long ago a connection last chose it, and
//! how long the entry still holds.

use lb_common::{AFFINITY_CLIENT_ADDR, AFFINITY_SET_LOCAL, Affinity4Key, Affinity4Value};

use super::{
    inspect::{Inspector, socket},
    output::table,
};
use crate::datapath::{MapsError, codec::ipv4_from_be};

#[derive(Debug, serde::Serialize)]
pub struct AffinityView {
    pub service: String,
    /// `cluster` (all endpoints) or `local` (policy Local: this node's).
    pub endpoints: &'static str,
    /// The client address (packet hooks), or `netns:<cookie>` (a pod or
    /// the node, through the socket hooks).
    pub client: String,
    pub backend: String,
    /// Seconds since a new connection last chose the backend.
    pub idle_seconds: u64,
    /// Seconds the entry still holds; 0: expired (the next connection
    /// chooses afresh).
    pub expires_in_seconds: u64,
}

/// Every entry, sorted by Service and client. `now_s` is the monotonic
/// clock in seconds, as the datapath stamps entries.
pub fn list(inspector: &Inspector, now_s: u64) -> Result<Vec<AffinityView>, MapsError> {
    let mut views: Vec<AffinityView> = inspector
        .maps()
        .affinity_entries()?
        .iter()
        .map(|(key, value)| view(inspector, key, value, now_s))
        .collect();
    views.sort_by(|a, b| (&a.service, &a.client).cmp(&(&b.service, &b.client)));
    Ok(views)
}

fn view(
    inspector: &Inspector,
    key: &Affinity4Key,
    value: &Affinity4Value,
    now_s: u64,
) -> AffinityView {
    let idle = now_s.saturating_sub(u64::from(value.last_used_s));
    // The timeout of the Service port's frontends (all carry the same).
    let timeout = inspector
        .frontend_entries()
        .iter()
        .find(|(_, fe)| fe.service_id == key.service_id && fe.affinity_timeout_s() != 0)
        .map_or(0, |(_, fe)| u64::from(fe.affinity_timeout_s()));
    AffinityView {
        service: inspector
            .service_name(key.service_id)
            .unwrap_or_else(|| format!("service {}", key.service_id)),
        endpoints: if key.set == AFFINITY_SET_LOCAL {
            "local"
        } else {
            "cluster"
        },
        client: if key.client_kind == AFFINITY_CLIENT_ADDR {
            ipv4_from_be(key.client as u32).to_string()
        } else {
            format!("netns:{}", key.client)
        },
        backend: inspector.backend(value.backend_id).map_or_else(
            || format!("backend {} (gone)", value.backend_id),
            |be| socket(be.addr_be, be.port_be),
        ),
        idle_seconds: idle,
        expires_in_seconds: timeout.saturating_sub(idle),
    }
}

/// The monotonic clock in seconds (`bpf_ktime_get_ns`'s clock).
pub fn monotonic_now_s() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a plain syscall writing into `now`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64
}

/// The human table.
pub fn render(views: &[AffinityView]) -> String {
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.service.clone(),
                v.endpoints.to_owned(),
                v.client.clone(),
                v.backend.clone(),
                format!("{}s", v.idle_seconds),
                format!("{}s", v.expires_in_seconds),
            ]
        })
        .collect();
    table(
        &[
            "SERVICE",
            "ENDPOINTS",
            "CLIENT",
            "BACKEND",
            "IDLE",
            "EXPIRES IN",
        ],
        &rows,
    )
}
