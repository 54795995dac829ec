//! Everything that touches the kernel: loading and attaching the programs,
//! pinning, test runs, and typed access to the maps.
//!
//! - [`object`]: the embedded object, its programs, load options and errors.
//! - [`pins`]: the pin directory on bpffs, pinned maps and links.
//! - [`loader`]: the [`Datapath`] (the object loaded over its maps).
//! - [`attach`]: XDP, tcx and cgroup attachment, swapping pinned links.
//! - [`test_run`]: `BPF_PROG_TEST_RUN`, also of the agent's own programs.
//! - [`cleanup`]: `lb cleanup`.
//! - [`kernel`], [`codec`]: the maps, typed; [`trace`]: `lb trace`.
//!
//! `plan`/`apply` write through the [`DatapathMaps`] trait, so they can be
//! tested against an in-memory implementation as well as the real maps.

use lb_common::{Backend4, Frontend4Key, FrontendValue, ServiceInfo};

use crate::model::SourceRange;

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("map {map}: {operation} failed: {source}")]
    Map {
        map: &'static str,
        operation: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("map {map} is full ({capacity} entries): raise the limit or remove objects")]
    Full { map: &'static str, capacity: u32 },
    #[error("{0}")]
    Invalid(String),
}

/// Tables built and written together where they are written in chunks:
/// their slots exist only while they are written (about 1 MiB at 4 KiB a
/// table).
pub(crate) const TABLES_PER_WRITE: usize = 256;

/// What a purge of stale UDP flows must reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurgeScope {
    /// The connection-table entries and the connected sockets: the
    /// backends stay in the backends map (another port lists them, or they
    /// stopped serving this one), so the entries would still translate.
    Everything,
    /// The connected sockets alone: the backends leave the backends map in
    /// the same plan, and the datapath's recheck sends a flow's next
    /// datagram elsewhere itself (`kernel_ct_recheck`,
    /// `a_udp_flow_to_a_removed_backend_chooses_again`), so the walk of
    /// both connection tables (milliseconds at the default size, even when
    /// empty) is spared; the entries left age out with UDP's timeout. A
    /// connected socket was translated once, at connect(), and has no
    /// packet path to recheck it: it is aborted either way.
    SocketsOnly,
}

/// The datapath's service tables, as plan/apply sees them.
pub trait DatapathMaps {
    /// Maglev tables the datapath can hold.
    fn max_tables(&self) -> u32;
    /// Backend ids the datapath has room for (1 to this: `--max-backends`).
    fn max_backends(&self) -> u32;
    fn frontends(&self) -> Result<Vec<(Frontend4Key, FrontendValue)>, MapsError>;
    fn backends(&self) -> Result<Vec<(u32, Backend4)>, MapsError>;
    fn set_backend(&mut self, id: u32, backend: &Backend4) -> Result<(), MapsError>;
    fn remove_backend(&mut self, id: u32) -> Result<(), MapsError>;
    /// Writes a whole Maglev table: `lb_common::maglev::table_size` slots
    /// (a prime from 1,021 to 65,537), each a backend id.
    fn write_table(&mut self, table_id: u32, slots: &[u32]) -> Result<(), MapsError>;
    /// Writes several whole tables, as [`Self::write_table`] each; the
    /// kernel's maps swap them in together (an array of maps waits for
    /// running programs once per update call, not once per table).
    fn write_tables(&mut self, tables: &[(u32, &[u32])]) -> Result<(), MapsError> {
        for &(table_id, slots) in tables {
            self.write_table(table_id, slots)?;
        }
        Ok(())
    }
    /// Writes whole tables `ids`, the `i`-th's slots given by `slots(i)`,
    /// called just before it is written (from any thread): as
    /// [`Self::write_tables`], with only as many tables' slots alive at
    /// once as the datapath needs. In memory, chunks of
    /// [`TABLES_PER_WRITE`]; the kernel's maps build and fill new tables on
    /// every core, and swap as many in per update of the outer map as the
    /// open-file limit allows (one RCU wait each).
    fn write_built_tables(
        &mut self,
        ids: &[u32],
        slots: &(dyn Fn(usize) -> Vec<u32> + Sync),
    ) -> Result<(), MapsError> {
        for start in (0..ids.len()).step_by(TABLES_PER_WRITE) {
            let built: Vec<(u32, Vec<u32>)> = (start..ids.len().min(start + TABLES_PER_WRITE))
                .map(|i| (ids[i], slots(i)))
                .collect();
            let writes: Vec<(u32, &[u32])> = built
                .iter()
                .map(|(id, slots)| (*id, slots.as_slice()))
                .collect();
            self.write_tables(&writes)?;
        }
        Ok(())
    }
    /// Returns once no packet still selects from a table's slots as they
    /// were before a rewrite in place (the kernel's maps rewrite a table
    /// that keeps its size in place, and a program that read a slot just
    /// before may still run): called before what the old slots' backends
    /// must not outlive (their removal, their flows' purge). The kernel's
    /// maps read the datapath's per-CPU counts of programs selecting
    /// (microseconds), else wait for an RCU grace period. In memory, and
    /// when nothing was rewritten since, at once.
    fn wait_for_table_readers(&mut self) -> Result<(), MapsError> {
        Ok(())
    }
    /// Gives a table nothing references (its quarantine over) back: its
    /// memory returns to the kernel. A table never written is no error.
    fn release_table(&mut self, table_id: u32) -> Result<(), MapsError>;
    /// Reads a whole Maglev table back (a restarted agent adopts the tables
    /// it finds instead of rewriting them).
    fn read_table(&self, table_id: u32) -> Result<Vec<u32>, MapsError>;
    fn set_frontend(&mut self, key: &Frontend4Key, value: &FrontendValue) -> Result<(), MapsError>;
    /// Writes several frontends, as [`Self::set_frontend`] each in order
    /// (the kernel's maps take them in batch updates).
    fn set_frontends(
        &mut self,
        frontends: &[(Frontend4Key, FrontendValue)],
    ) -> Result<(), MapsError> {
        for (key, value) in frontends {
            self.set_frontend(key, value)?;
        }
        Ok(())
    }
    /// Writes several backends, as [`Self::set_backend`] each in order.
    fn set_backends(&mut self, backends: &[(u32, Backend4)]) -> Result<(), MapsError> {
        for (id, backend) in backends {
            self.set_backend(*id, backend)?;
        }
        Ok(())
    }
    /// Writes several services' names and policies, as
    /// [`Self::set_service`] each in order.
    fn set_services(&mut self, services: &[(u32, ServiceInfo)]) -> Result<(), MapsError> {
        for (id, info) in services {
            self.set_service(*id, info)?;
        }
        Ok(())
    }
    /// Names and policies of service ports, by service id.
    fn services(&self) -> Result<Vec<(u32, ServiceInfo)>, MapsError>;
    fn set_service(&mut self, id: u32, info: &ServiceInfo) -> Result<(), MapsError>;
    fn remove_service(&mut self, id: u32) -> Result<(), MapsError>;
    fn remove_frontend(&mut self, key: &Frontend4Key) -> Result<(), MapsError>;
    /// Removes connection-table and socket reverse-translation entries whose
    /// backend is one of `backends` (kube-proxy flushes UDP conntrack for
    /// removed endpoints, so DNS clients are not black-holed). Returns how
    /// many entries were removed.
    fn purge_connections_to(&mut self, backends: &[Backend4]) -> Result<usize, MapsError>;
    /// Removes the UDP connection-table entries of each (service id,
    /// backend): a Service port's flows to an endpoint that stopped serving
    /// it (kube-proxy's conntrack cleanup), and aborts the connected UDP
    /// sockets the socket hooks translated for that port to that backend.
    /// Another port's flows to the same backend stay. `scope` says whether
    /// the connection table needs the walk (see [`PurgeScope`]). Returns
    /// how many.
    fn purge_service_connections(
        &mut self,
        flows: &[(u32, Backend4)],
        scope: PurgeScope,
    ) -> Result<usize, MapsError>;
    /// Removes the session-affinity entries of each (service id, backend
    /// id): endpoints that left the Service port, whose remembered clients
    /// must choose afresh. Returns how many entries were removed.
    fn purge_affinity(&mut self, pairs: &[(u32, u32)]) -> Result<usize, MapsError>;
    /// Sets the address new external connections are masqueraded to (the
    /// node's primary IPv4; `None`: none known, nothing is masqueraded).
    fn set_snat_address(&mut self, addr: Option<std::net::Ipv4Addr>) -> Result<(), MapsError>;

    // loadBalancerSourceRanges
    /// Every (service id, allowed range) the source-range trie holds.
    fn source_ranges(&self) -> Result<Vec<(u32, SourceRange)>, MapsError>;
    fn set_source_range(&mut self, service_id: u32, range: &SourceRange) -> Result<(), MapsError>;
    fn remove_source_range(
        &mut self,
        service_id: u32,
        range: &SourceRange,
    ) -> Result<(), MapsError>;

    // sctp and service CIDRs
    /// Every allocated ClusterIP the datapath holds.
    fn cluster_ips(&self) -> Result<Vec<std::net::Ipv4Addr>, MapsError>;
    fn set_cluster_ip(&mut self, addr: std::net::Ipv4Addr) -> Result<(), MapsError>;
    fn remove_cluster_ip(&mut self, addr: std::net::Ipv4Addr) -> Result<(), MapsError>;
    /// Every service CIDR the datapath holds.
    fn service_cidrs(&self) -> Result<Vec<SourceRange>, MapsError>;
    fn set_service_cidr(&mut self, cidr: &SourceRange) -> Result<(), MapsError>;
    fn remove_service_cidr(&mut self, cidr: &SourceRange) -> Result<(), MapsError>;
}

pub mod attach;
pub mod backend_capacity;
pub mod cleanup;
pub mod codec;
mod counters_upgrade;
pub mod ct_migrate;
pub mod ct_migrate_v2;
pub mod kernel;
mod link_update;
pub mod loader;
pub mod memory;
pub mod object;
pub mod pins;
pub mod program_load;
pub mod sock_destroy;
pub mod test_run;
pub mod trace;

pub use attach::{Attached, XdpAttachMode};
pub use kernel::{KernelMaps, MapFill};
pub use loader::Datapath;
pub use memory::MemoryMaps;
pub use object::{LoadError, LoadOptions};
pub use test_run::{LiveProgram, TestRunOutcome};
