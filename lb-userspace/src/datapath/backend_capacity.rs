//! How many backends the datapath holds (`--max-backends`): the sizes of
//! the two maps indexed by backend id, the backends hash (`lb_be4_v1`)
//! and the per-backend connection counts (`lb_be_conns_v1`, an array: ids
//! run from 1, so one entry more), chosen at load time.
//!
//! Maps pinned by an earlier run keep their size (a map cannot be resized
//! in place, and replacing the backends map would break every established
//! connection's backend lookup): without the flag the pinned size is
//! adopted, whatever it is (an upgrade from the fixed 65,536 keeps
//! 65,535 usable ids); with the flag a different pinned size is refused
//! with what to do next.

use std::path::{Path, PathBuf};

use aya::maps::MapData;
use lb_common::{
    BACKENDS4, DEFAULT_MAX_BACKENDS, MAX_BACKENDS_LIMIT, algorithm::BACKEND_CONNECTIONS,
};

use super::object::LoadError;

/// The entries of the two backend maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendSizes {
    pub backends: u32,
    pub connections: u32,
}

impl BackendSizes {
    /// Room for backend ids 1 to `capacity`.
    pub fn for_capacity(capacity: u32) -> BackendSizes {
        BackendSizes {
            backends: capacity,
            connections: capacity + 1,
        }
    }

    /// The backend ids both maps have room for (1 to this).
    pub fn capacity(&self) -> u32 {
        self.backends.min(self.connections.saturating_sub(1))
    }
}

/// The sizes to load with: `asked` (`--max-backends`; `None`: not given)
/// against what `pin_dir` holds already.
pub fn resolve(pin_dir: Option<&Path>, asked: Option<u32>) -> Result<BackendSizes, LoadError> {
    if let Some(asked) = asked {
        if asked == 0 {
            return Err(LoadError::NoBackends);
        }
        if asked > MAX_BACKENDS_LIMIT {
            return Err(LoadError::TooManyBackends {
                asked,
                max: MAX_BACKENDS_LIMIT,
            });
        }
    }
    let wanted = BackendSizes::for_capacity(asked.unwrap_or(DEFAULT_MAX_BACKENDS));
    let Some(pinned) = pin_dir.and_then(pinned_sizes) else {
        return Ok(wanted);
    };
    match asked {
        Some(asked) if pinned != wanted => Err(LoadError::BackendsResized {
            dir: pin_dir.map(Path::to_path_buf).unwrap_or_default(),
            pinned: pinned.capacity(),
            asked,
        }),
        _ => Ok(pinned),
    }
}

/// The sizes of the backend maps pinned in `dir`, when both are there.
fn pinned_sizes(dir: &Path) -> Option<BackendSizes> {
    let entries = |name: &str| -> Option<u32> {
        let path: PathBuf = dir.join(name);
        let map = MapData::from_pin(path).ok()?;
        Some(map.info().ok()?.max_entries())
    };
    Some(BackendSizes {
        backends: entries(BACKENDS4)?,
        connections: entries(BACKEND_CONNECTIONS)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_sizes_both_maps_and_zero_or_too_many_is_refused() {
        assert_eq!(
            resolve(None, None).unwrap(),
            BackendSizes {
                backends: 1_048_576,
                connections: 1_048_577
            }
        );
        assert_eq!(resolve(None, Some(4)).unwrap().capacity(), 4);
        assert!(matches!(resolve(None, Some(0)), Err(LoadError::NoBackends)));
        let err = resolve(None, Some(MAX_BACKENDS_LIMIT + 1)).unwrap_err();
        assert!(err.to_string().contains("at most 16777216"), "{err}");
    }

    /// The fixed sizes of the version before the flag (65,536 each) leave
    /// ids 1 to 65,535, as that version handed out.
    #[test]
    fn the_sizes_before_the_flag_hold_65535_ids() {
        let old = BackendSizes {
            backends: 65_536,
            connections: 65_536,
        };
        assert_eq!(old.capacity(), 65_535);
    }

    #[test]
    fn a_pinned_size_the_flag_contradicts_says_what_to_do() {
        let err = LoadError::BackendsResized {
            dir: "/sys/fs/bpf/lb".into(),
            pinned: 65_535,
            asked: 1_048_576,
        };
        let msg = err.to_string();
        assert!(msg.contains("holds 65535 backends"), "{msg}");
        assert!(msg.contains("--max-backends 65535"), "{msg}");
        assert!(
            msg.contains("`lb cleanup --pin-dir /sys/fs/bpf/lb`"),
            "{msg}"
        );
    }
}
