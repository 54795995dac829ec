//! The connection table as the agent's sweep and purge see it: both tables
//! (assured flows, new flows) read in batches and entries removed from
//! whichever holds them.

use lb_common::{CT4, CT4_NEW, Ct4Key, Ct4Value};

use super::{KernelMaps, batch, ignore_missing, map_err};
use crate::datapath::MapsError;

/// The seconds of CLOCK_MONOTONIC, as the entries' timestamps count them
/// (`lb_common::ct::seconds`, which the datapath applies to
/// `bpf_ktime_get_coarse_ns`).
pub fn monotonic_s() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain syscall into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    lb_common::ct::timespec_seconds(ts.tv_sec as u64, ts.tv_nsec as u64)
}

/// Keys and values read per `BPF_MAP_LOOKUP_BATCH` call.
const BATCH: u32 = 4096;

impl KernelMaps {
    /// Entries each table holds at most: (assured flows, new flows).
    pub fn connection_capacities(&self) -> (u32, u32) {
        (self.ct_capacity, self.ct_new_capacity)
    }

    /// Every connection-table entry, assured flows first, read in batches
    /// of 4,096 (a walk key by key costs two syscalls per entry: seconds
    /// at a million entries), and how many of them the assured table held.
    pub fn connections_batched(&self) -> Result<(Vec<(Ct4Key, Ct4Value)>, usize), MapsError> {
        let mut out = Vec::new();
        let mut assured = 0;
        for (name, map) in [(CT4, &self.ct), (CT4_NEW, &self.ct_new)] {
            let data = aya::maps::IterableMap::<Ct4Key, Ct4Value>::map(map);
            match batch::read_hash::<Ct4Key, Ct4Value>(data, BATCH) {
                Ok(Some(entries)) => out.extend(entries),
                Ok(None) => out.extend(
                    map.iter()
                        .filter_map(|entry| match entry {
                            Err(aya::maps::MapError::KeyNotFound) => None,
                            other => Some(other),
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(map_err(name, "iterate"))?,
                ),
                Err(err) => {
                    return Err(MapsError::Invalid(format!(
                        "map {name}: batch lookup failed: {err}"
                    )));
                }
            }
            if name == CT4 {
                assured = out.len();
            }
        }
        Ok((out, assured))
    }

    /// How many entries the table of new flows (`new`) or of assured flows
    /// holds, counted by batch reads (a key walk costs a syscall per entry,
    /// and the scrape counts at every scrape).
    pub(super) fn connections_in(&self, new: bool) -> Result<u64, MapsError> {
        let (name, map) = if new {
            (CT4_NEW, &self.ct_new)
        } else {
            (CT4, &self.ct)
        };
        let data = aya::maps::IterableMap::<Ct4Key, Ct4Value>::map(map);
        match batch::count_hash::<Ct4Key, Ct4Value>(data, BATCH) {
            Ok(Some(count)) => Ok(count),
            Ok(None) => Ok(map.keys().filter(Result::is_ok).count() as u64),
            Err(err) => Err(MapsError::Invalid(format!(
                "map {name}: batch lookup failed: {err}"
            ))),
        }
    }

    /// Removes `key` from whichever table holds it: 1 if it was there.
    pub fn remove_connection(&mut self, key: &Ct4Key) -> Result<usize, MapsError> {
        let assured = ignore_missing(self.ct.remove(key)).map_err(map_err(CT4, "delete"))?;
        let new = ignore_missing(self.ct_new.remove(key)).map_err(map_err(CT4_NEW, "delete"))?;
        Ok(usize::from(assured || new))
    }

    /// Rewrites every entry in place, in the table that holds it (tests age
    /// entries this way instead of sleeping). Returns how many changed.
    pub fn rewrite_connections(
        &mut self,
        mut f: impl FnMut(&Ct4Key, &mut Ct4Value),
    ) -> Result<usize, MapsError> {
        let mut changed = 0;
        for (name, map) in [(CT4, &mut self.ct), (CT4_NEW, &mut self.ct_new)] {
            let entries: Vec<(Ct4Key, Ct4Value)> = map.iter().filter_map(Result::ok).collect();
            for (key, mut value) in entries {
                let before = value;
                f(&key, &mut value);
                if value != before {
                    map.insert(&key, &value, 0)
                        .map_err(map_err(name, "update"))?;
                    changed += 1;
                }
            }
        }
        Ok(changed)
    }

    /// Writes an entry into the table of assured flows (`assured`) or of
    /// new flows: restoring entries and tests that age them.
    pub fn set_connection(
        &mut self,
        key: &Ct4Key,
        value: &Ct4Value,
        assured: bool,
    ) -> Result<(), MapsError> {
        let (name, map) = if assured {
            (CT4, &mut self.ct)
        } else {
            (CT4_NEW, &mut self.ct_new)
        };
        map.insert(key, value, 0).map_err(map_err(name, "update"))
    }
}

impl KernelMaps {
    /// The flow hash's per-cluster seed (`--hash-seed`) the datapath uses.
    pub fn hash_seed(&self) -> Result<u32, MapsError> {
        self.hash_seed
            .get(&0, 0)
            .map_err(map_err(lb_common::HASH_SEED, "lookup"))
    }

    /// Sets the flow hash's seed: new flows select with it at once.
    pub fn set_hash_seed(&mut self, seed: u32) -> Result<(), MapsError> {
        self.hash_seed
            .set(0, &seed, 0)
            .map_err(map_err(lb_common::HASH_SEED, "update"))
    }

    /// The address new external connections are masqueraded to, as the
    /// datapath holds it (`None`: none).
    pub fn snat_address(&self) -> Result<Option<std::net::Ipv4Addr>, MapsError> {
        let addr_be = self
            .snat_address
            .get(&0, 0)
            .map_err(map_err(lb_common::snat::SNAT_ADDR, "lookup"))?;
        Ok((addr_be != 0).then(|| std::net::Ipv4Addr::from(addr_be.to_ne_bytes())))
    }

    /// Whether backends on this node are masqueraded too (the pod hook is
    /// attached: `lb_common::snat::SNAT_LOCAL`).
    pub fn masquerades_local_backends(&self) -> Result<bool, MapsError> {
        self.snat_local
            .get(&0, 0)
            .map(|on| on == 1)
            .map_err(map_err(lb_common::snat::SNAT_LOCAL, "lookup"))
    }

    /// Masquerades backends on this node too (`on`: only once the hook
    /// translating their pods' replies back is attached), or not.
    pub fn set_masquerade_local_backends(&mut self, on: bool) -> Result<(), MapsError> {
        self.snat_local
            .set(0, &u32::from(on), 0)
            .map_err(map_err(lb_common::snat::SNAT_LOCAL, "update"))
    }

    /// From now on, purging a UDP backend also aborts the connected UDP
    /// sockets to it of the processes in `cgroup` (the socket hooks'
    /// cgroup): they connect again, to a live backend.
    pub fn abort_sockets_in(&mut self, cgroup: std::path::PathBuf) {
        self.socket_cgroup = Some(cgroup);
    }

    /// The entry at `key` in whichever table holds it.
    pub fn connection(&self, key: &Ct4Key) -> Result<Option<Ct4Value>, MapsError> {
        for (name, map) in [(CT4, &self.ct), (CT4_NEW, &self.ct_new)] {
            match map.get(key, 0) {
                Ok(value) => return Ok(Some(value)),
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(err) => return Err(map_err(name, "lookup")(err)),
            }
        }
        Ok(None)
    }
}
