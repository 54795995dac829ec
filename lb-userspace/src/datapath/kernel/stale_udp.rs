//! Purging a UDP Service port's flows to an endpoint that stopped serving
//! it (kube-proxy's conntrack cleanup, pkg/proxy/conntrack/cleanup.go:
//! entries of the Service's frontends whose reply source is not a serving
//! endpoint): the connection-table entries of that port (both directions
//! carry its service id) to that backend, and the connected UDP sockets
//! the socket hooks translated for that port to it (their reverse
//! translations name the port; the socket, by its cookie, is aborted).
//! Another port's flows to the same backend stay. When the backend leaves
//! the backends map in the same plan, the connection table is not walked
//! (`PurgeScope::SocketsOnly`): the datapath's recheck moves each of its
//! flows at their next datagram.

use std::collections::BTreeSet;

use lb_common::{Backend4, Ct4Key, Endpoint4, PROTO_UDP, SOCK_REVNAT4, SockRevNat4Key};

use super::{KernelMaps, ignore_missing, map_err};
use crate::datapath::{MapsError, PurgeScope, sock_destroy};

impl KernelMaps {
    /// See [`crate::datapath::DatapathMaps::purge_service_connections`].
    pub(super) fn purge_udp_flows_of(
        &mut self,
        flows: &[(u32, Backend4)],
        scope: PurgeScope,
    ) -> Result<usize, MapsError> {
        let stale: BTreeSet<(u32, Endpoint4)> = flows
            .iter()
            .filter(|(_, backend)| backend.proto == PROTO_UDP)
            .map(|(service, backend)| (*service, backend.endpoint()))
            .collect();
        if stale.is_empty() {
            return Ok(0);
        }
        // Collect first: deleting while walking a hash map restarts the walk.
        let walked = match scope {
            PurgeScope::Everything => self.connections()?,
            PurgeScope::SocketsOnly => Vec::new(),
        };
        let ct_keys: Vec<Ct4Key> = walked
            .into_iter()
            .filter(|(key, value)| {
                key.proto == PROTO_UDP
                    && key
                        .backend(value)
                        .is_some_and(|b| stale.contains(&(value.service_id, b)))
            })
            .map(|(key, _)| key)
            .collect();
        let sockets: Vec<(SockRevNat4Key, Endpoint4)> = self
            .socket_translations()?
            .into_iter()
            .filter(|(key, value)| stale.contains(&(value.service_id, key.backend())))
            .map(|(key, _)| (key, key.backend()))
            .collect();
        let mut removed = 0;
        for key in &ct_keys {
            removed += self.remove_connection(key)?;
        }
        for (key, _) in &sockets {
            removed += usize::from(
                ignore_missing(self.sock_revnat.remove(key))
                    .map_err(map_err(SOCK_REVNAT4, "delete"))?,
            );
        }
        Ok(removed + self.abort_udp_sockets_of(&sockets))
    }

    /// Aborts the connected UDP sockets among `sockets` (cookie, peer).
    fn abort_udp_sockets_of(&self, sockets: &[(SockRevNat4Key, Endpoint4)]) -> usize {
        let (Some(cgroup), false) = (&self.socket_cgroup, sockets.is_empty()) else {
            return 0;
        };
        let wanted: BTreeSet<(u64, Endpoint4)> = sockets
            .iter()
            .map(|(key, peer)| (key.cookie, *peer))
            .collect();
        let matches = |peer: Endpoint4, cookie: u64| wanted.contains(&(cookie, peer));
        let (aborted, failed) = sock_destroy::destroy_udp_in_cgroup_where(cgroup, &matches);
        if let Some((path, err)) = failed.first() {
            tracing::warn!(
                namespaces_or_processes = failed.len(),
                first = %path.display(),
                "connected UDP sockets to endpoints that stopped serving not aborted in some \
                 network namespaces: {err} (the agent needs CAP_SYS_ADMIN and CAP_SYS_PTRACE, \
                 and hostPID in a cluster)"
            );
        }
        aborted
    }
}
