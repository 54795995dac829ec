//! The source-range trie (loadBalancerSourceRanges): what plan/apply
//! writes and reads back.

use lb_common::SOURCE_RANGES4;

use super::{KernelMaps, ignore_missing, insert_err, map_err};
use crate::{
    datapath::{
        MapsError,
        codec::{source_range_from_key, source_range_key},
    },
    model::SourceRange,
};

impl KernelMaps {
    pub(super) fn source_range_entries(&self) -> Result<Vec<(u32, SourceRange)>, MapsError> {
        let keys: Vec<_> = self
            .source_ranges
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(SOURCE_RANGES4, "iterate"))?;
        Ok(keys.iter().filter_map(source_range_from_key).collect())
    }

    pub(super) fn insert_source_range(
        &mut self,
        service_id: u32,
        range: &SourceRange,
    ) -> Result<(), MapsError> {
        let key = source_range_key(service_id, range);
        self.source_ranges
            .insert(&key, &lb_common::SOURCE_RANGE_ALLOW, 0)
            .map_err(insert_err(SOURCE_RANGES4, lb_common::MAX_SOURCE_RANGES))
    }

    pub(super) fn delete_source_range(
        &mut self,
        service_id: u32,
        range: &SourceRange,
    ) -> Result<(), MapsError> {
        let key = source_range_key(service_id, range);
        ignore_missing(self.source_ranges.remove(&key))
            .map(drop)
            .map_err(map_err(SOURCE_RANGES4, "delete"))
    }
}
