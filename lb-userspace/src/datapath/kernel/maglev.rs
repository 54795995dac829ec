//! Maglev tables in the kernel: one inner array per table, sized per
//! backend count (`lb_common::maglev`), behind the outer array of maps
//! `lb_maglev_v2`. A table is written whole into a new inner map (one
//! batch update), pinned under `<pin dir>/maglev_tables/<id>`, then swapped
//! into the outer map in one update: a packet sees the old table or the new
//! one, never a mix, and the kernel frees the old one once no program runs
//! on it (RCU). The pin is how the agent and operators read a table back:
//! through the outer map that needs `CAP_SYS_ADMIN`, which lb never has.

use std::path::{Path, PathBuf};

use aya::maps::{Array, MapData};
use lb_common::{
    MAGLEV, MAGLEV_TABLES_DIR,
    maglev::{TABLE_SIZE_INDEX, is_prime, valid_size},
};

use super::{KernelMaps, map_err};
use crate::datapath::MapsError;

/// `BPF_F_INNER_MAP`: an inner array of any size may replace another.
const BPF_F_INNER_MAP: u32 = 1 << 12;

/// Where the tables of the datapath pinned in `pin_dir` are pinned.
pub fn tables_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join(MAGLEV_TABLES_DIR)
}

fn table_pin(dir: &Path, table_id: u32) -> PathBuf {
    dir.join(table_id.to_string())
}

impl KernelMaps {
    /// Where tables are pinned; none: this datapath is not pinned.
    fn tables(&self) -> Result<&Path, MapsError> {
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
        let size = u32::try_from(slots.len()).unwrap_or(0);
        if !valid_size(size) || !is_prime(size) {
            return Err(MapsError::Invalid(format!(
                "Maglev table {table_id} has {} slots: a table size is a prime from 1021 to 65537",
                slots.len()
            )));
        }
        self.check_table(table_id)?;
        let mut inner = Array::<MapData, u32>::create(size + 1, BPF_F_INNER_MAP)
            .map_err(map_err(MAGLEV, "create a table"))?;
        let mut values = Vec::with_capacity(slots.len() + 1);
        values.push(size);
        values.extend_from_slice(slots);
        let written = {
            let data = aya::maps::IterableMap::<u32, u32>::map(&inner);
            super::batch::write_u32s(data, TABLE_SIZE_INDEX, &values)
        };
        match written {
            Ok(true) => {}
            Ok(false) => {
                for (index, value) in (TABLE_SIZE_INDEX..).zip(&values) {
                    inner
                        .set(index, value, 0)
                        .map_err(map_err(MAGLEV, "fill a table"))?;
                }
            }
            Err(err) => {
                return Err(MapsError::Invalid(format!(
                    "map {MAGLEV}: batch update of table {table_id} failed: {err}"
                )));
            }
        }
        self.pin_table(table_id, aya::maps::IterableMap::<u32, u32>::map(&inner))?;
        self.maglev
            .set(table_id, &inner, 0)
            .map_err(map_err(MAGLEV, "swap a table in"))
    }

    /// Pins a table under its id, replacing the previous pin atomically
    /// (a new name, then a rename over the old one).
    fn pin_table(&self, table_id: u32, table: &MapData) -> Result<(), MapsError> {
        let dir = self.tables()?;
        let io = |what: &str, err: std::io::Error| {
            MapsError::Invalid(format!("map {MAGLEV}: {what} {}: {err}", dir.display()))
        };
        std::fs::create_dir_all(dir).map_err(|err| io("creating", err))?;
        let pin = table_pin(dir, table_id);
        // bpffs refuses names with a dot: `new-<id>`, then `<id>`.
        let fresh = dir.join(format!("new-{table_id}"));
        let _ = std::fs::remove_file(&fresh);
        table.pin(&fresh).map_err(|err| {
            let source = std::error::Error::source(&err).map(ToString::to_string);
            MapsError::Invalid(format!(
                "map {MAGLEV}: pinning table {table_id} at {}: {err} ({})",
                fresh.display(),
                source.unwrap_or_default()
            ))
        })?;
        std::fs::rename(&fresh, &pin).map_err(|err| io("renaming a table pin in", err))
    }

    /// Removes table `table_id` from the outer map and unpins it: the
    /// kernel frees it once no program runs on it.
    pub(super) fn release_maglev_table(&mut self, table_id: u32) -> Result<(), MapsError> {
        self.check_table(table_id)?;
        if let Err(err) = delete_elem(&self.maglev_fd, table_id)
            && err.raw_os_error() != Some(libc::ENOENT)
        {
            return Err(MapsError::Invalid(format!(
                "map {MAGLEV}: releasing table {table_id}: {err}"
            )));
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
