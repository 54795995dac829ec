//! The balancing algorithm per Service (`lb.kubernetes.io/algorithm`):
//! how a new flow of the packet path picks its backend. The contract: the
//! algorithm's code in the frontend flags (bits 4-5, so the frontend
//! layout and its `_v1` name stay; a value written before the annotation
//! existed reads as Maglev), and the per-backend count of live connections
//! least-connections compares.
//!
//! Every algorithm picks among the slots of the frontend's Maglev table, so
//! all three respect the same eligible set (the endpoints the planner chose:
//! ready ones, or kube-proxy's serving-and-terminating fallback, local ones
//! under policy Local) with the same weights (each backend holds an equal
//! share of the slots, within one slot):
//! - Maglev: the slot of the flow's seeded hash (the same backend on every
//!   node, minimal disruption when the set changes);
//! - random: a slot drawn by `bpf_get_prandom_u32()` per new flow
//!   (kube-proxy's iptables `statistic --mode random`);
//! - least-connections: two slots drawn at random, and of their two
//!   backends the one with fewer live connections (power of two choices,
//!   Envoy's LEAST_REQUEST default): bounded work per packet, and a
//!   backend with more connections than another gets a new flow only when
//!   both draws name it (probability its share squared).

use crate::FrontendValue;

/// Where the algorithm sits in `FrontendValue.flags`.
pub const FE_ALGORITHM_SHIFT: u32 = 4;
pub const FE_ALGORITHM_MASK: u32 = 0b11 << FE_ALGORITHM_SHIFT;

/// `ALGORITHM_*` codes (`crate::ALGORITHM_MAGLEV` is 0): in the frontend
/// flags and in `ServiceInfo.algorithm`.
pub const ALGORITHM_RANDOM: u8 = 1;
pub const ALGORITHM_LEAST_CONNECTIONS: u8 = 2;

/// Live connections per backend: backend id -> count (array of `u64`, 64-bit because the bpf target's atomics are,
/// 64-bit; as many entries as the backends map). The datapath adds one when it enters
/// a flow and takes one off when it forgets one; the agent's sweep rewrites
/// the counts from the connection table every sweep (evictions, expiries
/// and closing flows are seen there only).
pub const BACKEND_CONNECTIONS: &str = "lb_be_conns_v1";

impl FrontendValue {
    /// The `ALGORITHM_*` code of new flows; an unknown code (bits 4-5 = 3,
    /// never written) reads as Maglev.
    #[inline(always)]
    pub const fn algorithm(&self) -> u8 {
        match ((self.flags & FE_ALGORITHM_MASK) >> FE_ALGORITHM_SHIFT) as u8 {
            ALGORITHM_RANDOM => ALGORITHM_RANDOM,
            ALGORITHM_LEAST_CONNECTIONS => ALGORITHM_LEAST_CONNECTIONS,
            _ => crate::ALGORITHM_MAGLEV,
        }
    }
}

/// The frontend flags' bits for an `ALGORITHM_*` code.
pub const fn algorithm_flags(algorithm: u8) -> u32 {
    ((algorithm as u32) << FE_ALGORITHM_SHIFT) & FE_ALGORITHM_MASK
}

/// Power of two choices: whether the second candidate (with `second`
/// connections) is taken over the first (`first`). Ties keep the first.
/// Counts compare as signed: a count a decrement took below zero (a flow
/// forgotten after the sweep rewrote the counts without it) reads as
/// below every positive count, not as 2^64 - 1.
#[inline(always)]
pub const fn second_is_less_loaded(first: u64, second: u64) -> bool {
    (second as i64) < (first as i64)
}

/// The slot of a uniformly drawn `random` in a table of `size` slots
/// (Lemire's multiply-shift: no division on the packet path, and no bias
/// beyond `size / 2^32`).
#[inline(always)]
pub const fn random_slot(random: u32, size: u32) -> u32 {
    ((random as u64 * size as u64) >> 32) as u32
}

const _: () = assert!(FE_ALGORITHM_MASK & crate::FE_FLAG_EMPTY_DROP == 0);
const _: () = assert!(FE_ALGORITHM_MASK & crate::FE_KIND_MASK == 0);
const _: () = assert!(FE_ALGORITHM_MASK & crate::FE_AFFINITY_MASK == 0);
const _: () = assert!(FE_ALGORITHM_MASK & crate::FE_FLAG_SOURCE_RANGES == 0);
const _: () = assert!(FE_ALGORITHM_MASK & crate::snat::FE_FLAG_MASQUERADE == 0);

#[cfg(test)]
mod tests {
    use super::*;

    fn fe(flags: u32) -> FrontendValue {
        FrontendValue {
            flags,
            ..FrontendValue::default()
        }
    }

    #[test]
    fn the_algorithm_round_trips_through_the_flags_and_keeps_other_bits() {
        for algorithm in [
            crate::ALGORITHM_MAGLEV,
            ALGORITHM_RANDOM,
            ALGORITHM_LEAST_CONNECTIONS,
        ] {
            let other = crate::FE_FLAG_EMPTY_DROP | 7 << crate::FE_AFFINITY_SHIFT;
            let value = fe(other | algorithm_flags(algorithm));
            assert_eq!(value.algorithm(), algorithm);
            assert_eq!(value.flags & !FE_ALGORITHM_MASK, other);
        }
        assert_eq!(fe(0).algorithm(), crate::ALGORITHM_MAGLEV, "older values");
        assert_eq!(fe(FE_ALGORITHM_MASK).algorithm(), crate::ALGORITHM_MAGLEV);
    }

    #[test]
    fn the_less_loaded_candidate_wins_and_ties_keep_the_first() {
        assert!(second_is_less_loaded(5, 4));
        assert!(!second_is_less_loaded(4, 4));
        assert!(!second_is_less_loaded(4, 5));
        assert!(
            second_is_less_loaded(0, u64::MAX),
            "-1 after a late decrement"
        );
    }

    #[test]
    fn random_slots_stay_in_the_table_and_cover_it() {
        for size in [1, 1021, 65_537] {
            assert_eq!(random_slot(0, size), 0);
            assert_eq!(random_slot(u32::MAX, size), size - 1);
        }
        let mut seen = [0u32; 7];
        for i in 0..7000u32 {
            seen[random_slot(crate::flow_hash::mix32(i), 7) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (850..1150).contains(&n)), "{seen:?}");
    }
}
