//! [`DatapathMaps`] over the real (pinned) maps, plus read-only views for
//! operator commands: counters, connections, socket translations.

use std::{io, path::Path};

use aya::{
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray},
    sys::SyscallError,
};
use lb_common::{
    ALL_MAPS, BACKENDS4, Backend4, CT4, Ct4Key, Ct4Value, FRONTENDS4, Frontend4Key, FrontendValue,
    MAGLEV, MAGLEV_TABLE_SIZE, SERVICE_STATS, SERVICES, SOCK_REVNAT4, STATS, ServiceCounters,
    ServiceInfo, SockRevNat4Key, SockRevNat4Value, reason::Reason,
};

use super::{DatapathMaps, MapsError};

/// The datapath's maps, typed.
pub struct KernelMaps {
    frontends: HashMap<MapData, Frontend4Key, FrontendValue>,
    frontends_capacity: u32,
    backends: HashMap<MapData, u32, Backend4>,
    backends_capacity: u32,
    maglev: Array<MapData, u32>,
    max_tables: u32,
    ct: HashMap<MapData, Ct4Key, Ct4Value>,
    sock_revnat: HashMap<MapData, SockRevNat4Key, SockRevNat4Value>,
    stats: PerCpuArray<MapData, u64>,
    services: HashMap<MapData, u32, ServiceInfo>,
    service_stats: PerCpuArray<MapData, ServiceCounters>,
}

impl std::fmt::Debug for KernelMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelMaps")
            .field("max_tables", &self.max_tables)
            .finish_non_exhaustive()
    }
}

fn map_err(map: &'static str, operation: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Map {
        map,
        operation,
        source,
    }
}

fn errno(err: &MapError) -> Option<i32> {
    match err {
        MapError::SyscallError(SyscallError { io_error, .. }) => io_error.raw_os_error(),
        MapError::IoError(io_error) => io_error.raw_os_error(),
        _ => None,
    }
}

/// A delete of something already gone is a success.
fn ignore_missing(result: Result<(), MapError>) -> Result<bool, MapError> {
    match result {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound | MapError::ElementNotFound) => Ok(false),
        Err(err) if errno(&err) == Some(libc::ENOENT) => Ok(false),
        Err(err) => Err(err),
    }
}

/// An insert into a full hash map fails with E2BIG (ENOSPC/ENOMEM for some
/// map kinds): report it as [`MapsError::Full`].
fn insert_err(map: &'static str, capacity: u32) -> impl FnOnce(MapError) -> MapsError {
    move |err| match errno(&err) {
        Some(libc::E2BIG | libc::ENOSPC) => MapsError::Full { map, capacity },
        _ => MapsError::Map {
            map,
            operation: "insert",
            source: err,
        },
    }
}

impl KernelMaps {
    /// Opens the maps pinned in `pin_dir` (operator commands, a second
    /// process next to the agent).
    pub fn open_pinned(pin_dir: &Path) -> Result<KernelMaps, MapsError> {
        check_layout_version(pin_dir)?;
        let mut data = Vec::with_capacity(ALL_MAPS.len());
        for name in ALL_MAPS {
            let path = pin_dir.join(name);
            let map = MapData::from_pin(&path).map_err(|err| match err {
                MapError::SyscallError(SyscallError { io_error, .. })
                    if io_error.kind() == io::ErrorKind::NotFound =>
                {
                    MapsError::Invalid(format!(
                        "no pinned map {}: is the agent running with this pin directory?",
                        path.display()
                    ))
                }
                err => MapsError::Map {
                    map: name,
                    operation: "open pinned",
                    source: err,
                },
            })?;
            data.push(map);
        }
        let maps: [MapData; ALL_MAPS.len()] = data
            .try_into()
            .map_err(|_| MapsError::Invalid("map count mismatch".into()))?;
        Self::from_map_data(maps)
    }

    /// Builds the typed view, checking each map's type and sizes. The maps
    /// come in `ALL_MAPS` order.
    pub(crate) fn from_map_data(maps: [MapData; ALL_MAPS.len()]) -> Result<KernelMaps, MapsError> {
        let [
            frontends,
            backends,
            maglev,
            ct,
            sock_revnat,
            stats,
            services,
            service_stats,
        ] = maps;
        let capacity = |map: &'static str, data: &MapData| {
            data.info()
                .map(|info| info.max_entries())
                .map_err(map_err(map, "info"))
        };
        let frontends_capacity = capacity(FRONTENDS4, &frontends)?;
        let backends_capacity = capacity(BACKENDS4, &backends)?;
        let maglev_entries = capacity(MAGLEV, &maglev)?;
        let typed = |name: &'static str, data: MapData| {
            Map::from_map_data(data).map_err(map_err(name, "open"))
        };
        Ok(KernelMaps {
            frontends: typed(FRONTENDS4, frontends)?
                .try_into()
                .map_err(map_err(FRONTENDS4, "open"))?,
            frontends_capacity,
            backends: typed(BACKENDS4, backends)?
                .try_into()
                .map_err(map_err(BACKENDS4, "open"))?,
            backends_capacity,
            maglev: typed(MAGLEV, maglev)?
                .try_into()
                .map_err(map_err(MAGLEV, "open"))?,
            max_tables: maglev_entries / MAGLEV_TABLE_SIZE,
            ct: typed(CT4, ct)?.try_into().map_err(map_err(CT4, "open"))?,
            sock_revnat: typed(SOCK_REVNAT4, sock_revnat)?
                .try_into()
                .map_err(map_err(SOCK_REVNAT4, "open"))?,
            stats: typed(STATS, stats)?
                .try_into()
                .map_err(map_err(STATS, "open"))?,
            services: typed(SERVICES, services)?
                .try_into()
                .map_err(map_err(SERVICES, "open"))?,
            service_stats: typed(SERVICE_STATS, service_stats)?
                .try_into()
                .map_err(map_err(SERVICE_STATS, "open"))?,
        })
    }

    /// The counters of one service port, summed over CPUs.
    pub fn service_counters(&self, service_id: u32) -> Result<ServiceCounters, MapsError> {
        let values = self
            .service_stats
            .get(&service_id, 0)
            .map_err(map_err(SERVICE_STATS, "lookup"))?;
        Ok(values
            .iter()
            .fold(ServiceCounters::default(), |sum, c| ServiceCounters {
                new_flows: sum.new_flows.wrapping_add(c.new_flows),
                established: sum.established.wrapping_add(c.established),
                rejected: sum.rejected.wrapping_add(c.rejected),
                dropped: sum.dropped.wrapping_add(c.dropped),
            }))
    }

    /// Every counter, summed over CPUs, in reason order.
    pub fn stats(&self) -> Result<Vec<(Reason, u64)>, MapsError> {
        Reason::ALL
            .iter()
            .map(|&reason| {
                let values = self
                    .stats
                    .get(&(reason as u32), 0)
                    .map_err(map_err(STATS, "lookup"))?;
                Ok((reason, values.iter().copied().fold(0u64, u64::wrapping_add)))
            })
            .collect()
    }

    /// One counter, summed over CPUs.
    pub fn stat(&self, reason: Reason) -> Result<u64, MapsError> {
        let values = self
            .stats
            .get(&(reason as u32), 0)
            .map_err(map_err(STATS, "lookup"))?;
        Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
    }

    /// Every connection-table entry (both directions).
    pub fn connections(&self) -> Result<Vec<(Ct4Key, Ct4Value)>, MapsError> {
        self.ct
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(CT4, "iterate"))
    }

    /// Every socket reverse-translation entry.
    pub fn socket_translations(
        &self,
    ) -> Result<Vec<(SockRevNat4Key, SockRevNat4Value)>, MapsError> {
        self.sock_revnat
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(SOCK_REVNAT4, "iterate"))
    }

    /// The backend ids of one Maglev table.
    pub fn table(&self, table_id: u32) -> Result<Vec<u32>, MapsError> {
        self.check_table(table_id)?;
        let base = table_id * MAGLEV_TABLE_SIZE;
        (base..base + MAGLEV_TABLE_SIZE)
            .map(|i| self.maglev.get(&i, 0).map_err(map_err(MAGLEV, "lookup")))
            .collect()
    }

    fn check_table(&self, table_id: u32) -> Result<(), MapsError> {
        if table_id >= self.max_tables {
            return Err(MapsError::Full {
                map: MAGLEV,
                capacity: self.max_tables * MAGLEV_TABLE_SIZE,
            });
        }
        Ok(())
    }
}

/// Refuses a pin directory that holds no datapath, or maps of another
/// layout version (`lb_fe4_v2`, written by an older or newer lb): reading
/// them as ours would misreport.
pub fn check_layout_version(pin_dir: &Path) -> Result<(), MapsError> {
    let read_error =
        |err: io::Error| MapsError::Invalid(format!("reading {}: {err}", pin_dir.display()));
    let entries = match std::fs::read_dir(pin_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(MapsError::Invalid(format!(
                "no lb datapath pinned at {}: is the agent running? (see `lb agent --pin-dir`)",
                pin_dir.display()
            )));
        }
        Err(err) => return Err(read_error(err)),
    };
    let mut foreign = Vec::new();
    for entry in entries {
        let name = entry.map_err(read_error)?.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with("lb_") || ALL_MAPS.contains(&name) {
            continue;
        }
        let Some((_, version)) = name.rsplit_once("_v") else {
            continue;
        };
        if !version.is_empty()
            && version.bytes().all(|b| b.is_ascii_digit())
            && format!("_v{version}") != lb_common::MAP_VERSION_SUFFIX
        {
            foreign.push(name.to_string());
        }
    }
    foreign.sort();
    match foreign.first() {
        Some(found) => Err(MapsError::Invalid(format!(
            "maps in {} were written by another lb version (found {found}; this lb understands {}): \
             use the lb binary of the running agent",
            pin_dir.display(),
            lb_common::MAP_VERSION_SUFFIX
        ))),
        None => Ok(()),
    }
}

/// Whether a connection-table entry belongs to a flow translated to `b`.
fn ct_entry_uses(key: &Ct4Key, value: &Ct4Value, b: &Backend4) -> bool {
    key.proto == b.proto && key.backend(value) == Some(b.endpoint())
}

impl DatapathMaps for KernelMaps {
    fn max_tables(&self) -> u32 {
        self.max_tables
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
            .map_err(insert_err(BACKENDS4, self.backends_capacity))
    }

    fn remove_backend(&mut self, id: u32) -> Result<(), MapsError> {
        ignore_missing(self.backends.remove(&id))
            .map(drop)
            .map_err(map_err(BACKENDS4, "delete"))
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

    fn remove_service(&mut self, id: u32) -> Result<(), MapsError> {
        ignore_missing(self.services.remove(&id))
            .map(drop)
            .map_err(map_err(SERVICES, "delete"))
    }

    fn write_table(&mut self, table_id: u32, slots: &[u32]) -> Result<(), MapsError> {
        if slots.len() != MAGLEV_TABLE_SIZE as usize {
            return Err(MapsError::Invalid(format!(
                "Maglev table {table_id} has {} slots, expected {MAGLEV_TABLE_SIZE}",
                slots.len()
            )));
        }
        self.check_table(table_id)?;
        let base = table_id * MAGLEV_TABLE_SIZE;
        for (index, id) in (base..).zip(slots) {
            self.maglev
                .set(index, id, 0)
                .map_err(map_err(MAGLEV, "update"))?;
        }
        Ok(())
    }

    fn read_table(&self, table_id: u32) -> Result<Vec<u32>, MapsError> {
        self.table(table_id)
    }

    fn set_frontend(&mut self, key: &Frontend4Key, value: &FrontendValue) -> Result<(), MapsError> {
        self.frontends
            .insert(key, value, 0)
            .map_err(insert_err(FRONTENDS4, self.frontends_capacity))
    }

    fn remove_frontend(&mut self, key: &Frontend4Key) -> Result<(), MapsError> {
        ignore_missing(self.frontends.remove(key))
            .map(drop)
            .map_err(map_err(FRONTENDS4, "delete"))
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
            removed +=
                usize::from(ignore_missing(self.ct.remove(key)).map_err(map_err(CT4, "delete"))?);
        }
        for key in &sock_keys {
            removed += usize::from(
                ignore_missing(self.sock_revnat.remove(key))
                    .map_err(map_err(SOCK_REVNAT4, "delete"))?,
            );
        }
        Ok(removed)
    }
}
