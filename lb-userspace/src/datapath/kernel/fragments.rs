//! The fragmented datagrams the datapath remembers (`lb_common::frag`),
//! read back for tests and operators.

use lb_common::frag::{FRAGS4, Frag4Key, Frag4Ports};

use super::{KernelMaps, map_err};
use crate::datapath::MapsError;

impl KernelMaps {
    /// Every remembered datagram: its key as the hook received it, and the
    /// ports of its first fragment.
    pub fn fragments(&self) -> Result<Vec<(Frag4Key, Frag4Ports)>, MapsError> {
        self.fragments
            .iter()
            .filter_map(|entry| match entry {
                // Evicted between the key walk and the lookup.
                Err(aya::maps::MapError::KeyNotFound) => None,
                other => Some(other),
            })
            .collect::<Result<_, _>>()
            .map_err(map_err(FRAGS4, "read"))
    }
}
