//! Maglev table sizes per Service: a prime at least
//! [`SLOTS_PER_BACKEND`] times the backend count, as the Maglev paper
//! advises (Eisenbud et al., NSDI'16, section 5.3: with M much larger than
//! N, each backend's share is within one slot of M/N, so its error is
//! under N/M, 1% here), from [`MIN_TABLE_SIZE`] up to [`MAX_TABLE_SIZE`].
//! Small Services keep 1,021 slots (4 KiB); a Service of 600 backends gets
//! 60,013, where a fixed 1,021 would give each 1 or 2 slots (a 100% error).
//!
//! Each table is an inner map of `crate::MAGLEV` (an array of maps): slot 0
//! holds the table's size, slots 1 to size the backend ids, so a table and
//! its size swap together in one update of the outer map.

/// The fewest slots a table has (the size every table had before).
pub const MIN_TABLE_SIZE: u32 = 1021;
/// The most slots a table has: past 655 backends the table stops growing,
/// and a share (within one slot of 65,537/N) stays within 1% of the ideal
/// up to about 1,300 backends (at 1,000: 65 or 66 slots each, 0.8%).
pub const MAX_TABLE_SIZE: u32 = 65_537;
/// Slots per backend the size aims at.
pub const SLOTS_PER_BACKEND: u32 = 100;
/// Where a table's size sits in its inner map (its slots follow it).
pub const TABLE_SIZE_INDEX: u32 = 0;

/// The table size for `backends` backends: the smallest prime at least
/// `SLOTS_PER_BACKEND * backends`, within `MIN_TABLE_SIZE..=MAX_TABLE_SIZE`.
pub const fn table_size(backends: u32) -> u32 {
    let wanted = backends.saturating_mul(SLOTS_PER_BACKEND);
    if wanted <= MIN_TABLE_SIZE {
        return MIN_TABLE_SIZE;
    }
    if wanted >= MAX_TABLE_SIZE {
        return MAX_TABLE_SIZE;
    }
    let mut n = wanted;
    while !is_prime(n) {
        n += 1;
    }
    n
}

/// Whether `n` is prime (trial division: sizes are at most 65,537).
pub const fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// Whether a size read from a table is one this build writes (the
/// datapath trusts nothing else).
pub const fn valid_size(size: u32) -> bool {
    size >= MIN_TABLE_SIZE && size <= MAX_TABLE_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_primes_at_least_a_hundred_slots_per_backend_within_bounds() {
        assert_eq!(table_size(0), 1021);
        assert_eq!(table_size(1), 1021);
        assert_eq!(table_size(10), 1021);
        assert_eq!(table_size(11), 1103, "the first prime past 1,100");
        assert_eq!(table_size(100), 10_007);
        assert_eq!(table_size(600), 60_013);
        assert_eq!(table_size(655), 65_519);
        assert_eq!(table_size(656), 65_537);
        assert_eq!(table_size(10_000), 65_537);
        assert_eq!(table_size(u32::MAX), 65_537);
        for n in 0..1000 {
            let size = table_size(n);
            assert!(is_prime(size) && valid_size(size), "{n}: {size}");
            assert!(size >= n * SLOTS_PER_BACKEND || size == MAX_TABLE_SIZE);
            // The smallest such prime: nothing prime between the aim and it.
            let aim = (n * SLOTS_PER_BACKEND).max(MIN_TABLE_SIZE);
            assert!((aim..size).all(|m| !is_prime(m)) || size == MAX_TABLE_SIZE);
        }
        assert!(is_prime(MIN_TABLE_SIZE) && is_prime(MAX_TABLE_SIZE));
    }
}
