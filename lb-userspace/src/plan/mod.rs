//! Plan: a pure diff between the desired state and what the maps hold, as a
//! list of map writes in an order no packet can observe half-done:
//!
//! 1. new or changed backends,
//! 2. whole Maglev tables (each sized to its backend count, its own inner
//!    map swapped in with one update, or rewritten in place slot by slot
//!    when its size stays: a packet reads a slot's old backend or its new
//!    one), at the Service port's own id,
//! 3. allowed source ranges of the ports about to filter by source, then
//!    frontend flips (each a single atomic map update),
//! 4. removal of frontends that are gone, then of source ranges nothing
//!    filters with; then the allocated ClusterIPs and service CIDRs
//!    (`service_cidrs`); the plan's selection is then effective
//!    (`apply_selection`: the programming latency is observed there),
//! 5. once no packet still reads a table's slots from before a rewrite in
//!    place, removal of the stale UDP connection entries (a Service
//!    port's flows to an endpoint that stopped serving it), then of the
//!    backends no Service port lists or selects any more, then of service
//!    ports nothing references,
//! 6. release of the tables whose quarantine ends (their memory goes back
//!    to the kernel).
//!
//! A table id belongs to one Service port (`tables`): a changed backend
//! set is a new table swapped in at the same id, so a packet that read
//! the frontend just before sees its own Service's old table or its new
//! one. An id its port stops using (the port goes, a set empties) is
//! quarantined for one more plan before another port may take it, so a
//! packet that read the removed frontend just before its removal never
//! finds another Service's table under its id.
//!
//! A Service port that cannot be planned (no table or id left, an address
//! the maps cannot hold) becomes a [`Problem`] of the plan and keeps what it
//! had; every other change still goes through.
//!
//! A sync plans only the Service ports whose desired part changed
//! (`Planner`, with the tracker's `Changes`), through indexes kept across
//! plans; the whole state is planned at start-up, at the periodic resync
//! and after a failed apply, and the property test in
//! `desired::incremental::tests` holds the first to the second.
//!
//! Rooms: `applied` (what the maps hold, start-up adoption), `index` (who
//! references what in the maps, kept by each applied plan), `free_ids`
//! (indexed free lists), `ids` (one plan's id allocation), `usage` (which
//! ports use each backend, with which flags, and which list it: a backend
//! any port lists stays in the map), `stale_udp` (the UDP purges, from
//! what each port's serving endpoints were), `diff` (the whole plan),
//! `scoped` (the plan of a few ports), `unplannable` (what a port that
//! cannot be planned keeps), `planner` (which of the two),
//! `apply` (ordered writes), `print` (the printed form), `maglev` (the
//! tables), `tables` (which table each frontend of a port selects from),
//! `affinity_purge`, `source_ranges` and `service_cidrs` (the
//! affinity, source-range and service-CIDR entries a plan changes).

mod affinity_purge;
mod algorithm;
mod applied;
mod apply;
mod diff;
mod free_ids;
mod ids;
mod index;
pub mod maglev;
#[cfg(test)]
mod maglev_sizes;
mod masquerade;
mod planner;
mod print;
mod scoped;
mod service_cidrs;
mod source_ranges;
mod stale_udp;
mod tables;
mod unplannable;
mod usage;

use lb_common::{Backend4, Frontend4Key, FrontendValue, ServiceInfo};

pub use applied::Applied;
pub use apply::{apply, apply_cleanup, apply_selection};
pub use diff::plan;
pub use ids::MAX_SERVICE_ID;
pub use planner::{PlanStats, Planner};
pub use service_cidrs::plan_service_cidrs;

use crate::{
    datapath::codec::CodecError,
    model::{Backend, Problem, ServicePortName, SourceRange},
};

/// The ordered map writes that take `Applied` to the desired state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Names and policies, written before any frontend refers to them.
    pub set_services: Vec<(u32, ServiceInfo)>,
    pub set_backends: Vec<(u32, Backend4)>,
    pub write_tables: Vec<TableWrite>,
    pub set_frontends: Vec<(Frontend4Key, FrontendValue)>,
    pub remove_frontends: Vec<Frontend4Key>,
    pub remove_backends: Vec<(u32, Backend4)>,
    /// Service ports no frontend refers to any more.
    pub remove_services: Vec<u32>,
    /// (service id, backend): the UDP flows of a Service port to an
    /// endpoint that stopped serving it, whose connection entries and
    /// connected sockets must go (kube-proxy's UDP conntrack cleanup,
    /// `stale_udp`); planned by the `Planner`, which knows what each port
    /// listed before.
    pub purge_connections: Vec<(u32, Backend4)>,
    /// (service id, backend id): session-affinity entries of endpoints
    /// that left a Service port with affinity (`affinity_purge`).
    pub purge_affinity: Vec<(u32, u32)>,
    /// Tables nothing references after this plan.
    pub release_tables: Vec<u32>,
    /// (service id, range): allowed sources written before the frontends
    /// flip (`source_ranges`).
    pub set_source_ranges: Vec<(u32, SourceRange)>,
    /// (service id, range): allowed sources removed after the frontends.
    pub remove_source_ranges: Vec<(u32, SourceRange)>,
    // sctp and service CIDRs
    /// Addresses that became allocated ClusterIPs (written after the
    /// frontends), and those that no longer are.
    pub set_cluster_ips: Vec<std::net::Ipv4Addr>,
    pub remove_cluster_ips: Vec<std::net::Ipv4Addr>,
    /// `--service-cidr`s to write, and those the maps hold but the agent
    /// was not started with.
    pub set_service_cidrs: Vec<SourceRange>,
    pub remove_service_cidrs: Vec<SourceRange>,
    /// Service ids assigned by this plan.
    pub new_services: Vec<(ServicePortName, u32)>,
    /// Service ports this plan leaves as they were, and why.
    pub problems: Vec<Problem>,
}

/// A Maglev table to write: its backends and their ids. The slots are
/// built when the table is written (`slots`), a few hundred at a time,
/// not when it is planned: a full sync at 10,000 Services planned 41 MB
/// of slots before writing the first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableWrite {
    pub table_id: u32,
    pub backends: Vec<Backend>,
    /// The id of each of `backends`, in the same order.
    pub backend_ids: Vec<u32>,
}

impl TableWrite {
    /// The table's slots as backend ids, `lb_common::maglev::table_size`
    /// of them (a prime of at least 100 per backend, so every backend id
    /// is in them).
    pub fn slots(&self) -> Vec<u32> {
        let size = lb_common::maglev::table_size(self.backends.len() as u32);
        let mut slots = maglev::table(&self.backends, size);
        for slot in &mut slots {
            *slot = self.backend_ids[*slot as usize];
        }
        slots
    }
}

/// Why one Service port could not be planned.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "all {max} Maglev tables are in use: start the agent with a larger --max-tables (each id costs 8 bytes of kernel memory; a table, 4 KiB to 256 KiB by its backend count, only while in use)"
    )]
    TablesExhausted { max: u32 },
    #[error(
        "all {max} backend ids are in use (--max-backends: one per distinct endpoint the EndpointSlices list, ready or not): start the agent with a larger --max-backends after `lb cleanup` (each backend costs 88 bytes of kernel memory), or remove endpoints or Services"
    )]
    BackendsExhausted { max: u32 },
    #[error(
        "all {MAX_SERVICE_ID} service ids are in use: too many Service ports for this node; remove Services"
    )]
    ServicesExhausted,
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl Plan {
    /// No map write (problems aside).
    pub fn is_empty(&self) -> bool {
        self.set_services.is_empty()
            && self.remove_services.is_empty()
            && self.set_backends.is_empty()
            && self.write_tables.is_empty()
            && self.set_frontends.is_empty()
            && self.remove_frontends.is_empty()
            && self.remove_backends.is_empty()
            && self.purge_connections.is_empty()
            && self.purge_affinity.is_empty()
            && self.set_source_ranges.is_empty()
            && self.remove_source_ranges.is_empty()
            && self.set_cluster_ips.is_empty()
            && self.remove_cluster_ips.is_empty()
            && self.set_service_cidrs.is_empty()
            && self.remove_service_cidrs.is_empty()
    }
}

#[cfg(test)]
mod tests;
