//! cgroup skb egress, on the socket hooks' cgroup: the first packet of a
//! socket the connect()/sendmsg() hook translated before its source was
//! known meets the Service's loadBalancerSourceRanges here (see
//! [`crate::source_ranges`]). Every other packet passes after one socket
//! storage lookup.

use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};
use lb_common::reason::Reason;

use crate::{source_ranges, stats};

/// Let the packet go on.
const PASS: i32 = 1;
/// Drop it (the sender's send fails with `EPERM`; TCP retransmits its SYN,
/// dropped again, until connect() times out).
const DROP: i32 = 0;

#[cgroup_skb(egress)]
pub fn lb_sock_egress(ctx: SkBuffContext) -> i32 {
    match source_ranges::check_routed_source(&ctx) {
        Ok(()) => PASS,
        Err(service_id) => {
            stats::count(Reason::DropSourceRange);
            stats::count_service(service_id, Reason::DropSourceRange);
            DROP
        }
    }
}
