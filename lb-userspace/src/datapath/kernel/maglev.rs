//! Maglev tables in the kernel: one inner array per table, sized per
//! backend count (`lb_common::maglev`), behind the outer array of maps
//! `lb_maglev_v2`. A table is written whole into a new inner map (through
//! a mapping of its memory: `BPF_F_MMAPABLE`), swapped into the outer map
//! in one update (at the same id when its Service port's set changed),
//! then pinned under `<pin dir>/maglev_tables/<id>`: a packet sees the old table or the new
//! one, never a mix, and the kernel frees the old one once no program runs
//! on it (RCU). The pin is how the agent and operators read a table back:
//! through the outer map that needs `CAP_SYS_ADMIN`, which lb never has.

use std::path::{Path, PathBuf};

use aya::maps::{Array, MapData};
use lb_common::{
    MAGLEV, MAGLEV_TABLES_DIR,
    maglev::{TABLE_SIZE_INDEX, is_prime, valid_size},
};

use super::{
    KernelMaps, map_err,
    mapped::{self, BPF_F_MMAPABLE},
};
use crate::datapath::MapsError;

/// `BPF_F_INNER_MAP`: an inner array of any size may replace another.
const BPF_F_INNER_MAP: u32 = 1 << 12;

/// Where the tables of the datapath pinned in `pin_dir` are pinned.
pub fn tables_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join(MAGLEV_TABLES_DIR)
}

/// Tables swapped in per batch update at the least: one RCU wait each,
/// and as many inner maps' descriptors open at once.
const SWAP_BATCH: usize = 256;

/// At most this many tables per batch update: tables are built one at a
/// time (their slots gone once written), so only the inner maps'
/// descriptors stay open until the swap. 16,384: a full sync of 10,000
/// Services swaps its tables in with one RCU wait (8-19 ms here) where
/// 8,192 took two.
const BUILT_SWAP_BATCH_MAX: usize = 16_384;

/// Descriptors left free for everything else the agent opens.
const FDS_KEPT_FREE: u64 = 512;

/// Tables per batch update that the open-file limit leaves room for.
pub(super) fn built_swap_batch() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    let soft = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } {
        0 => limit.rlim_cur,
        _ => 0,
    };
    swap_batch_for(soft)
}

/// Tables per batch update under a soft open-file limit of `soft`:
/// [`SWAP_BATCH`] at the least, [`BUILT_SWAP_BATCH_MAX`] at the most.
fn swap_batch_for(soft: u64) -> usize {
    let room = usize::try_from(soft.saturating_sub(FDS_KEPT_FREE)).unwrap_or(usize::MAX);
    room.clamp(SWAP_BATCH, BUILT_SWAP_BATCH_MAX)
}

pub(super) fn table_pin(dir: &Path, table_id: u32) -> PathBuf {
    dir.join(table_id.to_string())
}

impl KernelMaps {
    /// Where tables are pinned; none: this datapath is not pinned.
    pub(super) fn tables(&self) -> Result<&Path, MapsError> {
        self.tables_dir.as_deref().ok_or_else(|| {
            MapsError::Invalid(format!(
                "map {MAGLEV}: its tables are pinned beside it, and this datapath has no pin directory"
            ))
        })
    }

    /// Writes table `table_id` whole: a new inner map with the size and
    /// `slots`, pinned, then swapped in.
    pub(super) fn write_maglev_table(
        &mut self,
        table_id: u32,
        slots: &[u32],
    ) -> Result<(), MapsError> {
        self.write_maglev_tables(&[(table_id, slots)])
    }

    /// Writes several tables whole, as [`Self::write_maglev_tables_built`]
    /// (each one's slots copied when its turn comes).
    pub(super) fn write_maglev_tables(
        &mut self,
        tables: &[(u32, &[u32])],
    ) -> Result<(), MapsError> {
        let ids: Vec<u32> = tables.iter().map(|(id, _)| *id).collect();
        self.write_maglev_tables_built(&ids, &|i| tables[i].1.to_vec())
    }

    /// A new inner map holding `slots` (and its size), written through
    /// `window`; not swapped in (nor pinned) yet.
    pub(super) fn fill_table(
        &self,
        table_id: u32,
        slots: &[u32],
        window: &mut mapped::FillWindow,
    ) -> Result<Array<MapData, u32>, MapsError> {
        let size = u32::try_from(slots.len()).unwrap_or(0);
        if !valid_size(size) || !is_prime(size) {
            return Err(MapsError::Invalid(format!(
                "Maglev table {table_id} has {} slots: a table size is a prime from 1021 to 65537",
                slots.len()
            )));
        }
        self.check_table(table_id)?;
        let inner = Array::<MapData, u32>::create(size + 1, BPF_F_INNER_MAP | BPF_F_MMAPABLE)
            .map_err(map_err(MAGLEV, "create a table"))?;
        debug_assert_eq!(TABLE_SIZE_INDEX, 0);
        let data = aya::maps::IterableMap::<u32, u32>::map(&inner);
        window.write_u32s(data, &[&[size], slots]).map_err(|err| {
            MapsError::Invalid(format!("map {MAGLEV}: writing table {table_id}: {err}"))
        })?;
        Ok(inner)
    }

    /// Swaps filled tables into the outer map in one batch update (one by
    /// one where the kernel has no batch update for an array of maps).
    pub(super) fn swap_in(
        &mut self,
        filled: &[(u32, Array<MapData, u32>)],
    ) -> Result<(), MapsError> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let ids: Vec<u32> = filled.iter().map(|(id, _)| *id).collect();
        let fds: Vec<u32> = filled
            .iter()
            .map(|(_, inner)| {
                let data = aya::maps::IterableMap::<u32, u32>::map(inner);
                data.fd().as_fd().as_raw_fd() as u32
            })
            .collect();
        let batched =
            super::batch::write_keyed(self.maglev_fd.as_fd(), &ids, &fds).map_err(|err| {
                MapsError::Invalid(format!("map {MAGLEV}: swapping tables in: {err}"))
            })?;
        if !batched {
            for (table_id, inner) in filled {
                self.maglev
                    .set(*table_id, inner, 0)
                    .map_err(map_err(MAGLEV, "swap a table in"))?;
                self.outer_updated();
            }
        } else {
            self.outer_updated();
        }
        Ok(())
    }

    /// Creates the directory the tables are pinned in (once per write, not
    /// per table).
    pub(super) fn make_tables_dir(&self) -> Result<(), MapsError> {
        let dir = self.tables()?;
        std::fs::create_dir_all(dir).map_err(|err| {
            MapsError::Invalid(format!("map {MAGLEV}: creating {}: {err}", dir.display()))
        })
    }

    /// Pins a table under its id (in the directory `make_tables_dir`
    /// made). A table id pinned before is replaced atomically (a new name,
    /// then a rename over the old one); a fresh id is pinned at once, one
    /// syscall where the replacement takes three.
    pub(super) fn pin_table(&self, table_id: u32, table: &MapData) -> Result<(), MapsError> {
        let dir = self.tables()?;
        let pin = table_pin(dir, table_id);
        let pin_err = |at: &Path, err: aya::pin::PinError| {
            let source = std::error::Error::source(&err).map(ToString::to_string);
            MapsError::Invalid(format!(
                "map {MAGLEV}: pinning table {table_id} at {}: {err} ({})",
                at.display(),
                source.unwrap_or_default()
            ))
        };
        match table.pin(&pin) {
            Ok(()) => return Ok(()),
            Err(aya::pin::PinError::SyscallError(err))
                if err.io_error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(err) => return Err(pin_err(&pin, err)),
        }
        // bpffs refuses names with a dot: `new-<id>`, then `<id>`.
        let fresh = dir.join(format!("new-{table_id}"));
        let _ = std::fs::remove_file(&fresh);
        table.pin(&fresh).map_err(|err| pin_err(&fresh, err))?;
        std::fs::rename(&fresh, &pin).map_err(|err| {
            MapsError::Invalid(format!(
                "map {MAGLEV}: renaming a table pin in {}: {err}",
                dir.display()
            ))
        })
    }

    /// Removes table `table_id` from the outer map and unpins it: the
    /// kernel frees it once no program runs on it.
    pub(super) fn release_maglev_table(&mut self, table_id: u32) -> Result<(), MapsError> {
        self.check_table(table_id)?;
        self.table_gone(table_id);
        match delete_elem(&self.maglev_fd, table_id) {
            Ok(()) => self.outer_updated(),
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {}
            Err(err) => {
                return Err(MapsError::Invalid(format!(
                    "map {MAGLEV}: releasing table {table_id}: {err}"
                )));
            }
        }
        match std::fs::remove_file(table_pin(self.tables()?, table_id)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(MapsError::Invalid(
                format!("map {MAGLEV}: unpinning table {table_id}: {err}"),
            )),
            _ => Ok(()),
        }
    }

    /// The backend ids of table `table_id`, read from its pin; empty when
    /// none was ever written.
    pub(super) fn read_maglev_table(&self, table_id: u32) -> Result<Vec<u32>, MapsError> {
        self.check_table(table_id)?;
        let pin = table_pin(self.tables()?, table_id);
        if !pin.exists() {
            return Ok(Vec::new());
        }
        let data = MapData::from_pin(&pin).map_err(map_err(MAGLEV, "open a table"))?;
        let table: Array<MapData, u32> = aya::maps::Map::Array(data)
            .try_into()
            .map_err(map_err(MAGLEV, "open a table"))?;
        let size = table
            .get(&TABLE_SIZE_INDEX, 0)
            .map_err(map_err(MAGLEV, "lookup"))?;
        if !valid_size(size) || size >= table.len() {
            return Err(MapsError::Invalid(format!(
                "map {MAGLEV}: table {table_id} says it has {size} slots in {} entries",
                table.len()
            )));
        }
        let data = aya::maps::IterableMap::<u32, u32>::map(&table);
        match super::batch::read_u32s(data, TABLE_SIZE_INDEX + 1, size) {
            Ok(Some(slots)) => return Ok(slots),
            Ok(None) => {}
            Err(err) => {
                return Err(MapsError::Invalid(format!(
                    "map {MAGLEV}: batch lookup of table {table_id} failed: {err}"
                )));
            }
        }
        (1..=size)
            .map(|i| table.get(&i, 0).map_err(map_err(MAGLEV, "lookup")))
            .collect()
    }
}

/// `BPF_MAP_DELETE_ELEM` on an array of maps (aya 0.16 has no delete for
/// it; the kernel does: the slot then holds no map).
fn delete_elem(map: &std::os::fd::OwnedFd, key: u32) -> std::io::Result<()> {
    /// `union bpf_attr`'s element member.
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
    use std::os::fd::AsRawFd as _;
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: 0,
        flags: 0,
    };
    // SAFETY: the attribute names one key of the map's key size (u32),
    // which outlives the call; the kernel only reads it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_DELETE_ELEM,
            &mut attr as *mut ElemAttr,
            std::mem::size_of::<ElemAttr>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The swap takes what the open-file limit leaves past 512: 512 under
    /// a container's usual 1,024, never fewer than 256, 16,384 under
    /// 65,536 (one swap for 10,000 tables), never more descriptors held
    /// than that.
    #[test]
    fn the_swap_batch_follows_the_open_file_limit() {
        assert_eq!(swap_batch_for(0), SWAP_BATCH);
        assert_eq!(swap_batch_for(600), SWAP_BATCH);
        assert_eq!(swap_batch_for(1024), 512);
        assert_eq!(swap_batch_for(4096), 4096 - 512);
        assert_eq!(swap_batch_for(65_536), BUILT_SWAP_BATCH_MAX);
        assert_eq!(swap_batch_for(u64::MAX), BUILT_SWAP_BATCH_MAX);
    }
}
