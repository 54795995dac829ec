//! The pin directory: its layout, the bpf filesystem it must live on, the
//! pinned maps an inspecting command opens, and the pinned links (stale
//! ones included).
//!
//! ```text
//! <pin_dir>/lb_fe4_v1, lb_be4_v1, ...        maps, pinned by name (lb-common)
//! <pin_dir>/links/lb_xdp_ingress@eth0         XDP link
//! <pin_dir>/links/lb_tc_egress@eth0           tcx egress link
//! <pin_dir>/links/lb_connect4@cgroup-1234     cgroup sock_addr links (cgroup id)
//! ```

use std::{
    io,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result, bail};
use aya::{
    maps::{MapData, MapError},
    programs::{
        ProgramError,
        links::{FdLink, LinkError, PinnedLink},
    },
    sys::SyscallError,
};
use lb_common::ALL_MAPS;
use nix::sys::statfs::{BPF_FS_MAGIC, statfs};

/// Where the agent pins by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/lb";
/// Subdirectory of the pin directory holding the pinned links.
pub const LINKS_DIR: &str = "links";

/// Makes sure `dir` exists on a bpf filesystem.
pub(super) fn prepare_pin_dir(dir: &Path) -> Result<()> {
    // The nearest existing ancestor tells whether bpffs is mounted there
    // (if it is not, /sys/fs/bpf is a read-only sysfs directory).
    let mut existing = dir;
    while !existing.exists() {
        existing = existing
            .parent()
            .context("pin directory has no existing ancestor")?;
    }
    if !is_bpffs(existing)? {
        bail!(
            "{} is not on a bpf filesystem (bpffs is not mounted there): run `mount -t bpf bpf /sys/fs/bpf`",
            existing.display()
        );
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating pin directory {}", dir.display()))?;
    Ok(())
}

fn is_bpffs(path: &Path) -> Result<bool> {
    let fs = statfs(path).with_context(|| format!("statfs {}", path.display()))?;
    Ok(fs.filesystem_type() == BPF_FS_MAGIC)
}

/// A private directory for the loader's pinned-by-name maps, removed with
/// its map pins on drop: the maps then live as long as our descriptors.
pub(super) struct PrivateMapDir(PathBuf);

impl PrivateMapDir {
    pub fn create() -> Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        // bpffs refuses names with a dot.
        let dir = Self(PathBuf::from(format!(
            "/sys/fs/bpf/lb-unpinned-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )));
        prepare_pin_dir(dir.path())?;
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateMapDir {
    fn drop(&mut self) {
        for name in ALL_MAPS {
            let _ = std::fs::remove_file(self.0.join(name));
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Opens every map an agent pinned in `pin_dir`, by name: all of them, or a
/// clear error saying the agent may not be running.
pub(super) fn open_pinned_maps(pin_dir: &Path) -> Result<Vec<(&'static str, MapData)>> {
    let mut pinned = Vec::with_capacity(ALL_MAPS.len());
    let mut missing = Vec::new();
    for name in ALL_MAPS {
        let path = pin_dir.join(name);
        match MapData::from_pin(&path) {
            Ok(map) => pinned.push((name, map)),
            Err(MapError::SyscallError(SyscallError { io_error, .. }))
                if io_error.kind() == io::ErrorKind::NotFound =>
            {
                missing.push(name);
            }
            Err(err) => {
                return Err(err).with_context(|| format!("opening pinned map {}", path.display()));
            }
        }
    }
    if !missing.is_empty() {
        let detail = if pinned.is_empty() {
            String::new()
        } else {
            format!(" ({} missing there)", missing.join(", "))
        };
        bail!(
            "no lb datapath pinned at {}: is the agent running? (see `lb agent --pin-dir`){detail}",
            pin_dir.display()
        );
    }
    Ok(pinned)
}

/// `<pin_dir>/links/<prog>@<target>`, with the links directory created.
pub(super) fn link_pin(pin_dir: &Path, prog: &str, target: &str) -> Result<PathBuf> {
    if target.is_empty() || target.contains('/') {
        bail!("invalid attach target {target:?}");
    }
    let links = pin_dir.join(LINKS_DIR);
    std::fs::create_dir_all(&links).with_context(|| format!("creating {}", links.display()))?;
    Ok(links.join(format!("{prog}@{}", pin_name(target))))
}

/// The targets `prog`'s links are pinned for under `pin_dir` (names
/// unescaped); none when nothing is pinned.
pub(super) fn pinned_targets(
    pin_dir: &Path,
    prog: &str,
) -> Result<std::collections::BTreeSet<String>> {
    let links = pin_dir.join(LINKS_DIR);
    let entries = match std::fs::read_dir(&links) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", links.display())),
    };
    let mut targets = std::collections::BTreeSet::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", links.display()))?;
        let name = entry.file_name();
        let Some((program, target)) = name.to_str().and_then(|n| n.split_once('@')) else {
            continue;
        };
        if program == prog {
            targets.insert(target.replace("%2e", ".").replace("%25", "%"));
        }
    }
    Ok(targets)
}

/// bpffs refuses names containing a dot (VLAN devices are `eth0.100`):
/// escape `%` and `.` the URL way.
fn pin_name(target: &str) -> String {
    target.replace('%', "%25").replace('.', "%2e")
}

/// The program a pin file under `links/` was made for, if it is one of ours
/// (`<prog>@<target>`).
pub(super) fn link_pin_program(pin: &Path) -> Option<&str> {
    let name = pin.file_name()?.to_str()?;
    Some(name.split_once('@')?.0)
}

/// Opens the link pinned at `pin`, if there is one.
pub(super) fn open_pinned_link(pin: &Path) -> Result<Option<FdLink>> {
    if !pin.exists() {
        return Ok(None);
    }
    let link = PinnedLink::from_pin(pin)
        .with_context(|| format!("opening pinned link {}", pin.display()))?;
    // Converting keeps the pin: only our file descriptor goes with the value.
    Ok(Some(FdLink::from(link)))
}

/// Pins a link; dropping the returned PinnedLink closes our descriptor,
/// and the pin keeps the attachment alive.
pub(super) fn pin_link(link: FdLink, pin: &Path) -> Result<()> {
    link.pin(pin)
        .with_context(|| format!("pinning link {}", pin.display()))?;
    Ok(())
}

/// A pinned link whose target went away (device deleted, cgroup removed):
/// `BPF_LINK_UPDATE` answers `ENOLINK`.
pub(super) fn is_defunct(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let io = if let Some(io_error) = cause.downcast_ref::<io::Error>() {
            Some(io_error)
        } else if let Some(SyscallError { io_error, .. }) = cause.downcast_ref() {
            Some(io_error)
        } else if let Some(ProgramError::SyscallError(SyscallError { io_error, .. })) =
            cause.downcast_ref()
        {
            Some(io_error)
        } else if let Some(LinkError::SyscallError(SyscallError { io_error, .. })) =
            cause.downcast_ref()
        {
            Some(io_error)
        } else {
            None
        };
        io.and_then(io::Error::raw_os_error) == Some(libc::ENOLINK)
    })
}

pub(super) fn remove_stale_pin(pin: &Path) -> Result<()> {
    tracing::warn!(pin = %pin.display(), "pinned link is defunct (its target is gone); attaching anew");
    std::fs::remove_file(pin).with_context(|| format!("removing stale link {}", pin.display()))
}

pub(super) fn remove_dir_if_empty(dir: &Path) -> Result<()> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(err)
            if err.kind() == io::ErrorKind::DirectoryNotEmpty
                || err.kind() == io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        Err(err) => Err(err).with_context(|| format!("removing {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_escape_dots_and_percent_signs() {
        assert_eq!(pin_name("eth0.100"), "eth0%2e100");
        assert_eq!(pin_name("a%2eb"), "a%252eb");
        assert_eq!(pin_name("cgroup-1234"), "cgroup-1234");
    }

    #[test]
    fn link_pins_are_named_program_at_target() {
        let dir = tempfile::tempdir().unwrap();
        let pin = link_pin(dir.path(), "lb_xdp_ingress", "eth0.100").unwrap();
        assert_eq!(pin, dir.path().join("links/lb_xdp_ingress@eth0%2e100"));
        assert!(dir.path().join(LINKS_DIR).is_dir());
        assert_eq!(link_pin_program(&pin), Some("lb_xdp_ingress"));
        assert_eq!(link_pin_program(Path::new("links/README")), None);
        std::fs::write(&pin, "").unwrap();
        std::fs::write(dir.path().join("links/lb_tc_egress@eth1"), "").unwrap();
        assert_eq!(
            pinned_targets(dir.path(), "lb_xdp_ingress").unwrap(),
            ["eth0.100".to_string()].into()
        );
        for bad in ["", "a/b"] {
            assert!(link_pin(dir.path(), "lb_xdp_ingress", bad).is_err());
        }
    }

    #[test]
    fn only_bpffs_counts_as_a_pin_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_bpffs(dir.path()).unwrap());
        assert!(!is_bpffs(Path::new("/proc")).unwrap());
        assert!(is_bpffs(&dir.path().join("missing")).is_err());
        let err = prepare_pin_dir(&dir.path().join("lb/pins")).unwrap_err();
        assert!(
            err.to_string()
                .contains("is not on a bpf filesystem (bpffs is not mounted there): run `mount -t bpf bpf /sys/fs/bpf`"),
            "{err}"
        );
        assert!(!dir.path().join("lb").exists());
    }
}
