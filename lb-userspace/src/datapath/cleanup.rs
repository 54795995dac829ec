//! `lb cleanup`: unpinning a datapath's links and maps.

use std::{io, path::Path};

use anyhow::{Context as _, Result};
use lb_common::ALL_MAPS;

use super::{
    loader::Datapath,
    object::{CGROUP_PROGRAMS, PROG_SOCK_EGRESS, PROG_TC_EGRESS, PROG_XDP_INGRESS},
    pins::{self, LINKS_DIR},
};

impl Datapath {
    /// Detaches everything pinned under `pin_dir` and removes its pinned
    /// maps (`lb cleanup`): every translated connection loses its state.
    /// Links still held open by a running process stay attached until it
    /// closes them. Files that are not ours are left alone.
    pub fn detach_all(pin_dir: &Path) -> Result<()> {
        unpin_links(&pin_dir.join(LINKS_DIR))?;
        for name in ALL_MAPS {
            remove_if_present(&pin_dir.join(name))?;
        }
        // The connection tables of lb before states and before masquerade,
        // if never migrated.
        remove_if_present(&pin_dir.join(super::ct_migrate::CT4_V1))?;
        // The Maglev tables' own pins, and the flat table array of lb
        // before per-Service sizes, if never carried over.
        remove_tables(&super::kernel::tables_dir(pin_dir))?;
        remove_if_present(&pin_dir.join(lb_common::MAGLEV_V1))?;
        remove_if_present(&pin_dir.join(super::ct_migrate_v2::CT4_V2))?;
        remove_if_present(&pin_dir.join(super::ct_migrate_v2::CT4_NEW_V2))?;
        if pin_dir.exists() {
            pins::remove_dir_if_empty(pin_dir)?;
        }
        Ok(())
    }

    /// Same as [`Self::detach_all`] (`lb cleanup`).
    pub fn remove_pins(pin_dir: &Path) -> Result<()> {
        Self::detach_all(pin_dir)
    }
}

/// Removes our link pins from `links` (an unpinned link nobody holds
/// detaches), then the directory if nothing else is in it.
fn unpin_links(links: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(links) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", links.display())),
    };
    for entry in entries {
        let path = entry?.path();
        if pins::link_pin_program(&path).is_some_and(is_our_program) {
            std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
        }
    }
    pins::remove_dir_if_empty(links)
}

/// Unpins every Maglev table (and a table pin a crash left half-renamed),
/// then the directory.
fn remove_tables(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        remove_if_present(&entry?.path())?;
    }
    pins::remove_dir_if_empty(dir)
}

fn is_our_program(prog: &str) -> bool {
    prog == PROG_XDP_INGRESS
        || prog == PROG_TC_EGRESS
        || prog == PROG_SOCK_EGRESS
        || CGROUP_PROGRAMS.contains(&prog)
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("unpinning {}", path.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_removes_our_pins_and_leaves_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let pin_dir = dir.path().join("lb");
        let links = pin_dir.join(LINKS_DIR);
        std::fs::create_dir_all(&links).unwrap();
        for file in ["lb_xdp_ingress@eth0", "lb_connect4@cgroup-7", "notes.txt"] {
            std::fs::write(links.join(file), "").unwrap();
        }
        std::fs::write(pin_dir.join(ALL_MAPS[0]), "").unwrap();
        Datapath::detach_all(&pin_dir).unwrap();
        let left: Vec<_> = std::fs::read_dir(&links)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["notes.txt"]);
        assert!(!pin_dir.join(ALL_MAPS[0]).exists());

        std::fs::remove_file(links.join("notes.txt")).unwrap();
        Datapath::detach_all(&pin_dir).unwrap();
        assert!(!pin_dir.exists(), "an emptied pin directory is removed");
        Datapath::detach_all(&pin_dir).unwrap();
    }
}
