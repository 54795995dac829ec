//! loadBalancerSourceRanges on every hook: a new connection to a frontend
//! whose Service port has ranges must come from inside one, else it is
//! dropped (`drop_source_range`), as kube-proxy's firewall chain drops it.
//! Checked after the frontend lookup and before anything is chosen, so a
//! refused source leaves no connection or affinity entry behind; only
//! frontends with `FE_FLAG_SOURCE_RANGES` pay for the lookup.

use aya_ebpf::{
    macros::map,
    maps::{LpmTrie, lpm_trie::Key},
};
use lb_common::{
    FrontendValue, MAX_SOURCE_RANGES, SOURCE_RANGE_ID_BITS, SourceRange4,
    TRACE_SOURCE_RANGE_ALLOWED, TRACE_SOURCE_RANGE_DENIED, reason::Reason,
};

use crate::trace;

/// (service port id, source prefix) -> allow.
#[map(name = "lb_src_ranges4_v1")]
pub static SOURCE_RANGES4: LpmTrie<SourceRange4, u8> = LpmTrie::pinned(MAX_SOURCE_RANGES, 0);

const _: () = assert!(crate::maps::str_eq(
    "lb_src_ranges4_v1",
    lb_common::SOURCE_RANGES4
));

/// Whether `src_be` (network order) may open a connection to `fe`.
#[inline(always)]
pub fn check(fe: &FrontendValue, src_be: u32) -> Result<(), Reason> {
    if !fe.has_source_ranges() {
        return Ok(());
    }
    let key = Key::new(
        SOURCE_RANGE_ID_BITS + 32,
        SourceRange4 {
            service_id: fe.service_id,
            addr_be: src_be,
        },
    );
    if SOURCE_RANGES4.get(&key).is_some() {
        trace::step(TRACE_SOURCE_RANGE_ALLOWED);
        Ok(())
    } else {
        trace::step(TRACE_SOURCE_RANGE_DENIED);
        Err(Reason::DropSourceRange)
    }
}
