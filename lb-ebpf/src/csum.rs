//! RFC 1624 incremental checksum updates for the XDP path (the tc path uses
//! the kernel's `l3/l4_csum_replace` helpers, which also understand
//! `CHECKSUM_PARTIAL` skbs).
//!
//! All values are taken exactly as they sit in memory (network byte order
//! loaded natively): the one's complement sum does not depend on byte order
//! as long as the checksum and the data are read the same way.

/// Folds a 32-bit one's complement accumulator to 16 bits.
#[inline(always)]
const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// `HC' = ~(~HC + ~m + m')` for a 16-bit field.
#[inline(always)]
pub const fn replace2(check: u16, from: u16, to: u16) -> u16 {
    let sum = (!check) as u32 + (!from) as u32 + to as u32;
    !fold(sum)
}

/// `HC' = ~(~HC + ~m + m')` for a 32-bit field (two 16-bit words).
#[inline(always)]
pub const fn replace4(check: u16, from: u32, to: u32) -> u16 {
    let nfrom = !from;
    let sum = (!check) as u32 + (nfrom & 0xffff) + (nfrom >> 16) + (to & 0xffff) + (to >> 16);
    !fold(sum)
}
