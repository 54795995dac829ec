//! The programs selecting a new flow's backend, counted per CPU: what the
//! agent's wait for the readers of a Maglev table rewritten in place
//! reads, instead of waiting for an RCU grace period.
//!
//! A program bumps [`READERS_ENTERED`] before its first read of a Maglev
//! slot, an affinity entry or a backend for a new flow, and
//! [`READERS_LEFT`] once the flow's connection entry (or the socket's
//! translation) is written, whatever the outcome. On one CPU a program can
//! be interrupted by another one (a socket hook by XDP in softirq, or a
//! preempted socket hook by another task's), so readers nest and
//! interleave: `entered - left` is how many are inside on that CPU now.
//!
//! The writer stores its slots, fences, then reads `left` and after it
//! `entered`, CPU by CPU; a CPU whose two reads are equal was empty when
//! its `left` was read ([`was_empty`]), so every reader that might have
//! read a slot before the stores has left it. `left` reaching the
//! `entered` of a first reading is not enough: a reader nested inside one
//! that entered before the stores can enter and leave after them, moving
//! `left` up while the outer one is still inside.

/// Per-CPU array of two `u64` ([`READERS_ENTERED`], [`READERS_LEFT`]),
/// only ever increased, each by an atomic add with fetch (fully ordered).
pub const READERS: &str = "lb_readers_v1";
/// Readers that entered the selection window on this CPU.
pub const READERS_ENTERED: u32 = 0;
/// Readers that left it on this CPU (never more than entered).
pub const READERS_LEFT: u32 = 1;
/// Slots of [`READERS`].
pub const READERS_SLOTS: u32 = 2;

/// Whether a CPU whose `left` was read first, then its `entered`, had no
/// reader inside when `left` was read. Both only grow and `left` never
/// passes `entered`, so `entered` read later than `left` can equal it only
/// if it already did at the first read.
#[inline(always)]
pub const fn was_empty(left: u64, entered_after: u64) -> bool {
    left == entered_after
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two readers on one CPU, the second nested in the first (a socket
    /// hook interrupted by XDP): the CPU reads as empty only once both
    /// left, though `left` reaches the first reading's `entered` earlier.
    #[test]
    fn a_nested_reader_leaving_does_not_empty_the_cpu() {
        let (mut entered, mut left) = (7u64, 7u64);
        assert!(was_empty(left, entered));
        entered += 1; // the outer reader enters
        let first_entered = entered;
        entered += 1; // a nested one enters
        left += 1; // and leaves
        assert_eq!(left, first_entered, "left reached the first reading");
        assert!(!was_empty(left, entered), "the outer reader is inside");
        left += 1;
        assert!(was_empty(left, entered));
    }
}
