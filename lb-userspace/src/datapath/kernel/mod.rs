//! The datapath's real (pinned) maps, typed: opening them and checking
//! their layout version here; [`DatapathMaps`] over them in `writer`, the
//! read-only views operator commands need (counters, connections, socket
//! translations, tables) in `views`.

mod affinity;
mod backend_connections;
mod batch;
mod ct;
mod forward;
mod fragments;
mod generation;
mod maglev;
mod maglev_fill;
mod maglev_in_place;
mod maglev_upgrade;
mod mapped;
mod masquerade_rules;
mod readers;
mod service_cidrs;
mod source_ranges;
mod stale_udp;
mod views;
mod writer;

pub use ct::monotonic_s;
pub use maglev::tables_dir;
pub use readers::ReaderWaits;
pub use views::MapFill;

use std::{io, path::Path};

use aya::{
    maps::{Array, ArrayOfMaps, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray},
    sys::SyscallError,
};
use lb_common::algorithm::BACKEND_CONNECTIONS;
use lb_common::forward::{FORWARD_DEVICES, FORWARD_STATS, XDP_TARGETS};
use lb_common::frag::{FRAGS4, Frag4Key, Frag4Ports};
use lb_common::masquerade_rules::{MASQUERADE_RULES, MasqueradeRules};
use lb_common::readers::READERS;
use lb_common::service_cidr::{CLUSTER_IPS4, SERVICE_CIDRS4};
use lb_common::snat::{SNAT_ADDR, SNAT_LOCAL};
use lb_common::{
    AFFINITY4, ALL_MAPS, Affinity4Key, Affinity4Value, BACKENDS4, Backend4, CT4, CT4_NEW, Ct4Key,
    Ct4Value, FRONTENDS4, Frontend4Key, FrontendValue, HASH_SEED, MAGLEV, SERVICE_STATS, SERVICES,
    SOCK_REVNAT4, SOURCE_RANGES4, STATS, ServiceCounters, ServiceInfo, SockRevNat4Key,
    SockRevNat4Value, SourceRange4,
};

use super::MapsError;

/// The datapath's maps, typed.
pub struct KernelMaps {
    frontends: HashMap<MapData, Frontend4Key, FrontendValue>,
    frontends_capacity: u32,
    backends: HashMap<MapData, u32, Backend4>,
    backends_capacity: u32,
    /// Backend ids both backend maps have room for (`--max-backends`).
    max_backends: u32,
    maglev: ArrayOfMaps<MapData, Array<MapData, u32>>,
    max_tables: u32,
    /// Where each Maglev table is pinned (see `maglev`); none: unpinned.
    tables_dir: Option<std::path::PathBuf>,
    /// The outer Maglev map's own descriptor, for the delete aya lacks.
    maglev_fd: std::os::fd::OwnedFd,
    /// Tables rewritten in place, and the wait for their readers.
    in_place: maglev_in_place::InPlace,
    /// The programs selecting now, counted per CPU (that wait's counts).
    readers: readers::Readers,
    ct: HashMap<MapData, Ct4Key, Ct4Value>,
    ct_capacity: u32,
    ct_new: HashMap<MapData, Ct4Key, Ct4Value>,
    ct_new_capacity: u32,
    sock_revnat: HashMap<MapData, SockRevNat4Key, SockRevNat4Value>,
    sock_revnat_capacity: u32,
    affinity_capacity: u32,
    stats: PerCpuArray<MapData, u64>,
    services: HashMap<MapData, u32, ServiceInfo>,
    service_stats: PerCpuArray<MapData, ServiceCounters>,
    // session affinity
    affinity: HashMap<MapData, Affinity4Key, Affinity4Value>,
    hash_seed: Array<MapData, u32>,
    // snat
    snat_address: Array<MapData, u32>,
    snat_local: Array<MapData, u32>,
    // loadBalancerSourceRanges
    source_ranges: LpmTrie<MapData, SourceRange4, u8>,
    // sctp and service CIDRs
    cluster_ips: HashMap<MapData, u32, u8>,
    service_cidrs: LpmTrie<MapData, u32, u8>,
    // selection: live connections per backend (least-connections)
    backend_connections: Array<MapData, u64>,
    // forwarding in XDP: the devices it may use, and its outcomes
    forward_devices: Array<MapData, u32>,
    forward_stats: PerCpuArray<MapData, u64>,
    // icmp errors and fragments: fragmented datagrams' ports (read by
    // tests and `lb status`'s fill levels)
    fragments: HashMap<MapData, Frag4Key, Frag4Ports>,
    fragments_capacity: u32,
    // masquerade detector: --cluster-cidr and --masquerade-all
    masquerade_rules: Array<MapData, MasqueradeRules>,
    // fast path: bumped after every backend write (`generation`)
    ct_generation: generation::Generation,
    // forwarding in XDP, to pods: the devices taking redirected frames
    xdp_targets: HashMap<MapData, u32, u32>,
    /// The socket hooks' cgroup: purging a UDP backend aborts the connected
    /// sockets of its processes (`sock_destroy`); none, no socket is touched.
    socket_cgroup: Option<std::path::PathBuf>,
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
        Ok(Self::from_map_data(maps)?.with_tables_dir(tables_dir(pin_dir)))
    }

    /// Builds the typed view, checking each map's type and sizes. The maps
    /// come in `ALL_MAPS` order.
    pub(crate) fn from_map_data(maps: [MapData; ALL_MAPS.len()]) -> Result<KernelMaps, MapsError> {
        let [
            frontends,
            backends,
            maglev,
            ct,
            ct_new,
            sock_revnat,
            stats,
            services,
            service_stats,
            affinity,
            hash_seed,
            snat_address,
            source_ranges,
            // sctp and service CIDRs
            cluster_ips,
            service_cidrs,
            // selection
            backend_connections,
            snat_local,
            // forwarding in XDP
            forward_devices,
            forward_stats,
            // icmp errors and fragments
            fragments,
            // masquerade detector
            masquerade_rules,
            // fast path
            ct_generation,
            // forwarding in XDP, to pods
            xdp_targets,
            // selection: the wait for readers of a table rewritten in place
            readers,
        ] = maps;
        let capacity = |map: &'static str, data: &MapData| {
            data.info()
                .map(|info| info.max_entries())
                .map_err(map_err(map, "info"))
        };
        let frontends_capacity = capacity(FRONTENDS4, &frontends)?;
        let backends_capacity = capacity(BACKENDS4, &backends)?;
        let max_tables = capacity(MAGLEV, &maglev)?;
        let maglev_fd = std::os::fd::AsFd::as_fd(maglev.fd())
            .try_clone_to_owned()
            .map_err(|err| MapsError::Invalid(format!("map {MAGLEV}: {err}")))?;
        let ct_capacity = capacity(CT4, &ct)?;
        let ct_new_capacity = capacity(CT4_NEW, &ct_new)?;
        let sock_revnat_capacity = capacity(SOCK_REVNAT4, &sock_revnat)?;
        let affinity_capacity = capacity(AFFINITY4, &affinity)?;
        let fragments_capacity = capacity(FRAGS4, &fragments)?;
        let max_backends = crate::datapath::backend_capacity::BackendSizes {
            backends: backends_capacity,
            connections: capacity(BACKEND_CONNECTIONS, &backend_connections)?,
        }
        .capacity();
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
            max_backends,
            maglev: typed(MAGLEV, maglev)?
                .try_into()
                .map_err(map_err(MAGLEV, "open"))?,
            max_tables,
            tables_dir: None,
            maglev_fd,
            ct: typed(CT4, ct)?.try_into().map_err(map_err(CT4, "open"))?,
            ct_capacity,
            ct_new: typed(CT4_NEW, ct_new)?
                .try_into()
                .map_err(map_err(CT4_NEW, "open"))?,
            ct_new_capacity,
            sock_revnat: typed(SOCK_REVNAT4, sock_revnat)?
                .try_into()
                .map_err(map_err(SOCK_REVNAT4, "open"))?,
            sock_revnat_capacity,
            affinity_capacity,
            stats: typed(STATS, stats)?
                .try_into()
                .map_err(map_err(STATS, "open"))?,
            services: typed(SERVICES, services)?
                .try_into()
                .map_err(map_err(SERVICES, "open"))?,
            service_stats: typed(SERVICE_STATS, service_stats)?
                .try_into()
                .map_err(map_err(SERVICE_STATS, "open"))?,
            affinity: typed(AFFINITY4, affinity)?
                .try_into()
                .map_err(map_err(AFFINITY4, "open"))?,
            hash_seed: typed(HASH_SEED, hash_seed)?
                .try_into()
                .map_err(map_err(HASH_SEED, "open"))?,
            snat_address: typed(SNAT_ADDR, snat_address)?
                .try_into()
                .map_err(map_err(SNAT_ADDR, "open"))?,
            source_ranges: typed(SOURCE_RANGES4, source_ranges)?
                .try_into()
                .map_err(map_err(SOURCE_RANGES4, "open"))?,
            cluster_ips: typed(CLUSTER_IPS4, cluster_ips)?
                .try_into()
                .map_err(map_err(CLUSTER_IPS4, "open"))?,
            service_cidrs: typed(SERVICE_CIDRS4, service_cidrs)?
                .try_into()
                .map_err(map_err(SERVICE_CIDRS4, "open"))?,
            backend_connections: typed(BACKEND_CONNECTIONS, backend_connections)?
                .try_into()
                .map_err(map_err(BACKEND_CONNECTIONS, "open"))?,
            snat_local: typed(SNAT_LOCAL, snat_local)?
                .try_into()
                .map_err(map_err(SNAT_LOCAL, "open"))?,
            forward_devices: typed(FORWARD_DEVICES, forward_devices)?
                .try_into()
                .map_err(map_err(FORWARD_DEVICES, "open"))?,
            forward_stats: typed(FORWARD_STATS, forward_stats)?
                .try_into()
                .map_err(map_err(FORWARD_STATS, "open"))?,
            fragments: typed(FRAGS4, fragments)?
                .try_into()
                .map_err(map_err(FRAGS4, "open"))?,
            fragments_capacity,
            masquerade_rules: typed(MASQUERADE_RULES, masquerade_rules)?
                .try_into()
                .map_err(map_err(MASQUERADE_RULES, "open"))?,
            ct_generation: generation::Generation::map(&ct_generation)?,
            xdp_targets: typed(XDP_TARGETS, xdp_targets)?
                .try_into()
                .map_err(map_err(XDP_TARGETS, "open"))?,
            socket_cgroup: None,
            in_place: maglev_in_place::InPlace::default(),
            readers: readers::Readers::new(
                typed(READERS, readers)?
                    .try_into()
                    .map_err(map_err(READERS, "open"))?,
            ),
        })
    }

    /// Refuses a table id past the Maglev map's end.
    fn check_table(&self, table_id: u32) -> Result<(), MapsError> {
        if table_id >= self.max_tables {
            return Err(MapsError::Full {
                map: MAGLEV,
                capacity: self.max_tables,
            });
        }
        Ok(())
    }

    /// The maps with their Maglev tables pinned under `dir`.
    pub(crate) fn with_tables_dir(mut self, dir: std::path::PathBuf) -> KernelMaps {
        self.tables_dir = Some(dir);
        self
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
