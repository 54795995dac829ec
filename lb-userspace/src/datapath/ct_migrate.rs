//! Upgrading the connection table's layout: an agent of this version
//! started on the pins of an older one finds the older tables beside the
//! `_v3` ones it just created, carries their entries over and removes
//! their pins, so established connections survive the upgrade:
//! - `lb_ct4_v1` (one LRU for every flow, timestamps in nanoseconds, no
//!   state): into the table of assured flows (they were live connections:
//!   TCP as established, UDP as a stream);
//! - `lb_ct4_v2` and `lb_ct4_new_v2` (states and seconds, no room for a
//!   masqueraded flow's second endpoint): each into its `_v3` table,
//!   unmasqueraded (the `_v2` datapath never masqueraded).
//!
//! Run after the new programs replaced the old ones on their
//! links: a flow the old program created in between is not carried over
//! (its next SYN or datagram creates it again; a TCP connection opened in
//! that instant is reset).

use std::path::Path;

use aya::maps::{HashMap, Map, MapData};
use bytemuck::{Pod, Zeroable};
use lb_common::{
    Ct4Key, Ct4Value, PROTO_TCP,
    ct::{CT_ESTABLISHED, CT_STREAM, seconds},
};

use super::{KernelMaps, MapsError};

/// The connection table of lb before states (`lb_ct4_v1`).
pub const CT4_V1: &str = "lb_ct4_v1";

/// `lb_ct4_v1`'s value (public for the tests that write one).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Ct4ValueV1 {
    pub nat_addr_be: u32,
    pub nat_port_be: u16,
    pub _pad: u16,
    pub backend_id: u32,
    pub service_id: u32,
    /// `bpf_ktime_get_ns()` when the flow was created and last seen.
    pub created_ns: u64,
    pub last_seen_ns: u64,
}

// SAFETY: repr(C), bytemuck Pod: what aya::Pod requires.
unsafe impl aya::Pod for Ct4ValueV1 {}

impl Ct4ValueV1 {
    fn upgraded(&self, proto: u8) -> Ct4Value {
        Ct4Value {
            nat_addr_be: self.nat_addr_be,
            nat_port_be: self.nat_port_be,
            state: if proto == PROTO_TCP {
                CT_ESTABLISHED
            } else {
                CT_STREAM
            },
            flags: 0,
            backend_id: self.backend_id,
            service_id: self.service_id,
            created_s: seconds(self.created_ns),
            last_seen_s: seconds(self.last_seen_ns),
            peer_addr_be: 0,
            peer_port_be: 0,
            checked_gen: 0,
        }
    }
}

/// Carries `lb_ct4_v1`'s entries in `pin_dir` over into `maps` and removes
/// its pin: how many entries moved, `None` when there was none to migrate.
pub fn migrate_v1(pin_dir: &Path, maps: &mut KernelMaps) -> Result<Option<usize>, MapsError> {
    let path = pin_dir.join(CT4_V1);
    let Some(entries) = read_old::<Ct4ValueV1>(&path)? else {
        return Ok(None);
    };
    for (key, value) in &entries {
        maps.set_connection(key, &value.upgraded(key.proto), true)?;
    }
    unpin(&path)?;
    Ok(Some(entries.len()))
}

/// What to do when an old table cannot be carried over.
pub(super) fn invalid(path: &Path, what: &str, err: &dyn std::fmt::Display) -> MapsError {
    MapsError::Invalid(format!(
        "{what} {}: {err}; remove it with `rm {}` (its connections are lost) and start again",
        path.display(),
        path.display()
    ))
}

/// The entries of the old table pinned at `path`, `None` when none is.
pub(super) fn read_old<V: aya::Pod>(path: &Path) -> Result<Option<Vec<(Ct4Key, V)>>, MapsError> {
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(path).map_err(|err| invalid(path, "opening", &err))?;
    let old: HashMap<MapData, Ct4Key, V> = Map::LruHashMap(data)
        .try_into()
        .map_err(|err| invalid(path, "reading", &err))?;
    Ok(Some(old.iter().filter_map(Result::ok).collect()))
}

pub(super) fn unpin(path: &Path) -> Result<(), MapsError> {
    std::fs::remove_file(path).map_err(|err| invalid(path, "unpinning", &err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_entries_become_assured_with_their_seconds() {
        let old = Ct4ValueV1 {
            nat_addr_be: 7,
            nat_port_be: 8,
            _pad: 0,
            backend_id: 3,
            service_id: 4,
            created_ns: 5_500_000_000,
            last_seen_ns: 9_500_000_000,
        };
        let tcp = old.upgraded(PROTO_TCP);
        assert_eq!(
            (tcp.state, tcp.created_s, tcp.last_seen_s),
            (CT_ESTABLISHED, 5, 9)
        );
        assert_eq!(
            (
                tcp.nat_addr_be,
                tcp.nat_port_be,
                tcp.backend_id,
                tcp.service_id
            ),
            (7, 8, 3, 4)
        );
        assert_eq!(old.upgraded(lb_common::PROTO_UDP).state, CT_STREAM);
    }
}
