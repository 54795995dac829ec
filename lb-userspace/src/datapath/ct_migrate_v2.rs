//! Upgrading from the connection table before masquerade (`lb_ct4_v2`,
//! `lb_ct4_new_v2`: 24-byte values with no room for a second endpoint):
//! each entry is carried over into its `_v3` table as it was (assured to
//! assured, new to new), unmasqueraded, and the old pins are removed.

use std::path::Path;

use bytemuck::{Pod, Zeroable};
use lb_common::Ct4Value;

use super::{
    KernelMaps, MapsError,
    ct_migrate::{read_old, unpin},
};

/// The assured table before masquerade.
pub const CT4_V2: &str = "lb_ct4_v2";
/// The new-flow table before masquerade.
pub const CT4_NEW_V2: &str = "lb_ct4_new_v2";

/// `lb_ct4_v2`'s value (public for the tests that write one).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Ct4ValueV2 {
    pub nat_addr_be: u32,
    pub nat_port_be: u16,
    pub state: u8,
    pub _pad: u8,
    pub backend_id: u32,
    pub service_id: u32,
    pub created_s: u32,
    pub last_seen_s: u32,
}

const _: () = assert!(size_of::<Ct4ValueV2>() == 24);

// SAFETY: repr(C), bytemuck Pod: what aya::Pod requires.
unsafe impl aya::Pod for Ct4ValueV2 {}

impl Ct4ValueV2 {
    pub fn upgraded(&self) -> Ct4Value {
        Ct4Value {
            nat_addr_be: self.nat_addr_be,
            nat_port_be: self.nat_port_be,
            state: self.state,
            flags: 0,
            backend_id: self.backend_id,
            service_id: self.service_id,
            created_s: self.created_s,
            last_seen_s: self.last_seen_s,
            peer_addr_be: 0,
            peer_port_be: 0,
            checked_gen: 0,
        }
    }
}

/// Carries `lb_ct4_v2` and `lb_ct4_new_v2` in `pin_dir` over into `maps`
/// and removes their pins: how many entries moved, `None` when there was
/// neither.
pub fn migrate_v2(pin_dir: &Path, maps: &mut KernelMaps) -> Result<Option<usize>, MapsError> {
    let mut moved = None;
    for (name, assured) in [(CT4_V2, true), (CT4_NEW_V2, false)] {
        let path = pin_dir.join(name);
        let Some(entries) = read_old::<Ct4ValueV2>(&path)? else {
            continue;
        };
        for (key, value) in &entries {
            maps.set_connection(key, &value.upgraded(), assured)?;
        }
        unpin(&path)?;
        *moved.get_or_insert(0) += entries.len();
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_their_state_and_seconds_unmasqueraded() {
        let old = Ct4ValueV2 {
            nat_addr_be: 7,
            nat_port_be: 8,
            state: lb_common::ct::CT_SYN_RECV,
            _pad: 0,
            backend_id: 3,
            service_id: 4,
            created_s: 5,
            last_seen_s: 9,
        };
        let new = old.upgraded();
        assert_eq!(
            (new.nat_addr_be, new.nat_port_be, new.state),
            (7, 8, lb_common::ct::CT_SYN_RECV)
        );
        assert_eq!(
            (
                new.backend_id,
                new.service_id,
                new.created_s,
                new.last_seen_s
            ),
            (3, 4, 5, 9)
        );
        assert!(!new.is_snat());
        assert_eq!((new.peer_addr_be, new.peer_port_be), (0, 0));
    }
}
