//! Masquerade (SNAT) of new external connections: kube-proxy's decision
//! (`lb_common::snat`) as the agent encoded it, `FE_FLAG_MASQUERADE` on
//! the frontend and the node's address in `SNAT_ADDR`.
//!
//! This round only `lb trace` sees the decision: the rewrite of the
//! source, its port allocation and the reverse translation of the replies
//! are not built yet (README, "Not built yet"), so in normal mode this is
//! pruned by the verifier and costs nothing.

use lb_common::{FrontendValue, snat::masquerades};

use crate::{maps::SNAT_ADDR, trace};

/// Records, in a trace, whether kube-proxy would masquerade a new
/// connection to `fe` and to which address (none while the agent knows no
/// IPv4 address of the node).
#[inline(always)]
pub fn trace_decision(fe: &FrontendValue) {
    if !trace::dry_run() || !masquerades(fe) {
        return;
    }
    if let Some(&addr_be) = SNAT_ADDR.get(0)
        && addr_be != 0
    {
        trace::masquerade(addr_be);
    }
}
