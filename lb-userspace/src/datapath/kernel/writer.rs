//! [`DatapathMaps`] over the real maps: what plan/apply writes through.

use lb_common::{
    BACKENDS4, Backend4, Ct4Key, Ct4Value, FRONTENDS4, Frontend4Key, FrontendValue, PROTO_UDP,
    SERVICES, SOCK_REVNAT4, ServiceInfo, SockRevNat4Key,
};

use aya::maps::{HashMap, MapData};

use super::{KernelMaps, ignore_missing, insert_err, map_err};
use crate::{
    datapath::{DatapathMaps, MapsError, PurgeScope, sock_destroy},
    model::SourceRange,
};

/// Aborts the connected UDP sockets whose peer is one of the UDP
/// `backends`, in every namespace of the socket hooks' `cgroup` (see
/// `sock_destroy`): how many. A namespace that cannot be entered (the
/// agent lacks the capability, a process exited) is logged, never an
/// error of the sync.
fn abort_udp_sockets(cgroup: &std::path::Path, backends: &[Backend4]) -> usize {
    let udp: Vec<_> = backends
        .iter()
        .filter(|b| b.proto == PROTO_UDP)
        .map(Backend4::endpoint)
        .collect();
    if udp.is_empty() {
        return 0;
    }
    let (aborted, failed) = sock_destroy::destroy_udp_connected_to_in_cgroup(cgroup, &udp);
    if let Some((path, err)) = failed.first() {
        tracing::warn!(
            namespaces_or_processes = failed.len(),
            first = %path.display(),
            "connected UDP sockets to removed backends not aborted in some network namespaces: {err} \
             (the agent needs CAP_SYS_ADMIN and CAP_SYS_PTRACE, and hostPID in a cluster)"
        );
    }
    aborted
}

/// Whether a connection-table entry belongs to a flow translated to `b`.
fn ct_entry_uses(key: &Ct4Key, value: &Ct4Value, b: &Backend4) -> bool {
    key.proto == b.proto && key.backend(value) == Some(b.endpoint())
}

impl DatapathMaps for KernelMaps {
    fn max_tables(&self) -> u32 {
        self.max_tables
    }

    fn max_backends(&self) -> u32 {
        self.max_backends
    }

    fn set_snat_address(&mut self, addr: Option<std::net::Ipv4Addr>) -> Result<(), MapsError> {
        // Network order, as packets carry it.
        let addr_be = addr.map_or(0, |addr| u32::from_ne_bytes(addr.octets()));
        self.snat_address
            .set(0, &addr_be, 0)
            .map_err(map_err(lb_common::snat::SNAT_ADDR, "update"))
    }

    fn frontends(&self) -> Result<Vec<(Frontend4Key, FrontendValue)>, MapsError> {
        self.frontends
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(FRONTENDS4, "iterate"))
    }

    fn backends(&self) -> Result<Vec<(u32, Backend4)>, MapsError> {
        self.backends
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(BACKENDS4, "iterate"))
    }

    fn set_backend(&mut self, id: u32, backend: &Backend4) -> Result<(), MapsError> {
        self.backends
            .insert(&id, backend, 0)
            .map_err(insert_err(BACKENDS4, self.backends_capacity))?;
        // fast path: established flows recheck their backend.
        self.ct_generation.bump();
        Ok(())
    }

    fn set_backends(&mut self, backends: &[(u32, Backend4)]) -> Result<(), MapsError> {
        if !batched(&self.backends, backends) {
            for (id, backend) in backends {
                self.backends
                    .insert(id, backend, 0)
                    .map_err(insert_err(BACKENDS4, self.backends_capacity))?;
            }
        }
        // fast path: established flows recheck their backend (once the
        // whole batch is in: none of it is referenced before the tables).
        if !backends.is_empty() {
            self.ct_generation.bump();
        }
        Ok(())
    }

    fn remove_backend(&mut self, id: u32) -> Result<(), MapsError> {
        ignore_missing(self.backends.remove(&id))
            .map(drop)
            .map_err(map_err(BACKENDS4, "delete"))?;
        // fast path: established flows recheck their backend.
        self.ct_generation.bump();
        Ok(())
    }

    fn services(&self) -> Result<Vec<(u32, ServiceInfo)>, MapsError> {
        self.services
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(SERVICES, "iterate"))
    }

    fn set_service(&mut self, id: u32, info: &ServiceInfo) -> Result<(), MapsError> {
        self.services
            .insert(&id, info, 0)
            .map_err(insert_err(SERVICES, lb_common::MAX_SERVICES))
    }

    fn set_services(&mut self, services: &[(u32, ServiceInfo)]) -> Result<(), MapsError> {
        if batched(&self.services, services) {
            return Ok(());
        }
        services
            .iter()
            .try_for_each(|(id, info)| self.set_service(*id, info))
    }

    fn remove_service(&mut self, id: u32) -> Result<(), MapsError> {
        ignore_missing(self.services.remove(&id))
            .map(drop)
            .map_err(map_err(SERVICES, "delete"))
    }

    fn write_table(&mut self, table_id: u32, slots: &[u32]) -> Result<(), MapsError> {
        self.write_maglev_table(table_id, slots)
    }

    fn write_tables(&mut self, tables: &[(u32, &[u32])]) -> Result<(), MapsError> {
        self.write_maglev_tables(tables)
    }

    fn write_built_tables(
        &mut self,
        ids: &[u32],
        slots: &(dyn Fn(usize) -> Vec<u32> + Sync),
    ) -> Result<(), MapsError> {
        self.write_maglev_tables_built(ids, slots)
    }

    fn wait_for_table_readers(&mut self) -> Result<(), MapsError> {
        self.settle_tables()
    }

    fn release_table(&mut self, table_id: u32) -> Result<(), MapsError> {
        self.release_maglev_table(table_id)
    }

    fn read_table(&self, table_id: u32) -> Result<Vec<u32>, MapsError> {
        self.table(table_id)
    }

    fn set_frontend(&mut self, key: &Frontend4Key, value: &FrontendValue) -> Result<(), MapsError> {
        self.frontends
            .insert(key, value, 0)
            .map_err(insert_err(FRONTENDS4, self.frontends_capacity))?;
        // pkt: established flows skip the frontend lookup while the
        // generation stands (`lb_common::ct::generation`).
        self.ct_generation.bump();
        Ok(())
    }

    fn set_frontends(
        &mut self,
        frontends: &[(Frontend4Key, FrontendValue)],
    ) -> Result<(), MapsError> {
        if batched(&self.frontends, frontends) {
            // pkt: as in `set_frontend`, once the whole batch is in.
            if !frontends.is_empty() {
                self.ct_generation.bump();
            }
            return Ok(());
        }
        frontends
            .iter()
            .try_for_each(|(key, value)| self.set_frontend(key, value))
    }

    fn remove_frontend(&mut self, key: &Frontend4Key) -> Result<(), MapsError> {
        ignore_missing(self.frontends.remove(key))
            .map(drop)
            .map_err(map_err(FRONTENDS4, "delete"))?;
        // pkt: as in `set_frontend`.
        self.ct_generation.bump();
        Ok(())
    }

    fn purge_connections_to(&mut self, backends: &[Backend4]) -> Result<usize, MapsError> {
        if backends.is_empty() {
            return Ok(0);
        }
        // Collect first: deleting while walking a hash map restarts the walk.
        let ct_keys: Vec<Ct4Key> = self
            .connections()?
            .into_iter()
            .filter(|(k, v)| backends.iter().any(|b| ct_entry_uses(k, v, b)))
            .map(|(k, _)| k)
            .collect();
        // The socket table has no protocol: an entry for the same address
        // and port goes whatever its protocol (it only serves getpeername
        // and recvmsg of sockets translated to this backend).
        let sock_keys: Vec<SockRevNat4Key> = self
            .socket_translations()?
            .into_iter()
            .filter(|(k, _)| backends.iter().any(|b| k.backend() == b.endpoint()))
            .map(|(k, _)| k)
            .collect();
        let mut removed = 0;
        for key in &ct_keys {
            removed += self.remove_connection(key)?;
        }
        for key in &sock_keys {
            removed += usize::from(
                ignore_missing(self.sock_revnat.remove(key))
                    .map_err(map_err(SOCK_REVNAT4, "delete"))?,
            );
        }
        let aborted = match &self.socket_cgroup {
            Some(cgroup) => abort_udp_sockets(cgroup, backends),
            None => 0,
        };
        Ok(removed + aborted)
    }

    fn purge_service_connections(
        &mut self,
        flows: &[(u32, Backend4)],
        scope: PurgeScope,
    ) -> Result<usize, MapsError> {
        self.purge_udp_flows_of(flows, scope)
    }

    fn purge_affinity(&mut self, pairs: &[(u32, u32)]) -> Result<usize, MapsError> {
        self.purge_affinity_of(pairs)
    }

    fn source_ranges(&self) -> Result<Vec<(u32, SourceRange)>, MapsError> {
        self.source_range_entries()
    }

    fn set_source_range(&mut self, service_id: u32, range: &SourceRange) -> Result<(), MapsError> {
        self.insert_source_range(service_id, range)
    }

    fn remove_source_range(
        &mut self,
        service_id: u32,
        range: &SourceRange,
    ) -> Result<(), MapsError> {
        self.delete_source_range(service_id, range)
    }

    // sctp and service CIDRs
    fn cluster_ips(&self) -> Result<Vec<std::net::Ipv4Addr>, MapsError> {
        self.cluster_ip_entries()
    }

    fn set_cluster_ip(&mut self, addr: std::net::Ipv4Addr) -> Result<(), MapsError> {
        self.insert_cluster_ip(addr)
    }

    fn remove_cluster_ip(&mut self, addr: std::net::Ipv4Addr) -> Result<(), MapsError> {
        self.delete_cluster_ip(addr)
    }

    fn service_cidrs(&self) -> Result<Vec<SourceRange>, MapsError> {
        self.service_cidr_entries()
    }

    fn set_service_cidr(&mut self, cidr: &SourceRange) -> Result<(), MapsError> {
        self.insert_service_cidr(cidr)
    }

    fn remove_service_cidr(&mut self, cidr: &SourceRange) -> Result<(), MapsError> {
        self.delete_service_cidr(cidr)
    }
}

/// Writes `pairs` into `map` in batch updates; false when it did not (no
/// batch update in this kernel, or one failed: the caller then writes one
/// by one, which rewrites what the batch wrote and reports the failing
/// entry as a single update would, a full map included).
fn batched<K: aya::Pod, V: aya::Pod>(map: &HashMap<MapData, K, V>, pairs: &[(K, V)]) -> bool {
    use aya::maps::IterableMap as _;
    pairs.len() > 1 && super::batch::write_hash_pairs(map.map(), pairs).unwrap_or(false)
}
