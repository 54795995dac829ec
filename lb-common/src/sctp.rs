//! SCTP on the packet path: the common header (RFC 9260 section 3.1), the
//! chunk types the connection table acts on, and the CRC32c update a port
//! rewrite needs, shared by the datapath and the host tests.
//!
//! SCTP's checksum is CRC32c (Castagnoli) over the SCTP packet alone, with
//! its own field zeroed: no IP pseudo-header, so rewriting an address needs
//! no change at all; rewriting a port does. CRC32c is not updatable with
//! one's complement arithmetic, but it is affine over GF(2): for messages
//! `m` and `m'` of equal length, `crc(m) ^ crc(m') = L(m ^ m')`, where `L`
//! is the CRC register run from zero with no final complement (the initial
//! value and the final complement cancel out). A change of the four bytes
//! at `offset` in an `n`-byte packet is `m ^ m' = 0..0 d 0..0`, whose `L`
//! is the word `d` multiplied by `x^(8 (n - offset))` modulo the CRC
//! polynomial (leading zero bytes do not move a register that is zero).
//! So the new CRC is the old one xor one product, at a cost that does not
//! depend on the packet's length and without reading the payload (skbs may
//! be non-linear, XDP frames multi-buffer): see [`crc32c_after_word_change`].
//!
//! The polynomial arithmetic is in the reflected representation CRC32c
//! uses: bit 31 holds the coefficient of x^0, bit 0 that of x^31.

/// SCTP's common header: ports, verification tag, checksum. The checksum is
/// stored little-endian (RFC 9260 appendix A: the CRC's low byte first).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SctpHdr {
    pub src_port_be: u16,
    pub dst_port_be: u16,
    pub vtag_be: u32,
    pub checksum_le: u32,
}

pub const SCTP_HLEN: usize = 12;
const _: () = assert!(size_of::<SctpHdr>() == SCTP_HLEN);
/// The smallest SCTP packet the datapath parses: the common header and
/// the first chunk's header (type, flags, length), whose type the
/// connection table reads.
pub const SCTP_MIN_LEN: usize = SCTP_HLEN + 4;
/// Offset of the checksum inside the common header.
pub const SCTP_CSUM_OFF: usize = 8;
/// Offset of the first chunk's type.
pub const SCTP_CHUNK_TYPE_OFF: usize = SCTP_HLEN;

/// Chunk types (RFC 9260 section 3.2).
pub mod chunk {
    pub const DATA: u8 = 0;
    pub const INIT: u8 = 1;
    pub const INIT_ACK: u8 = 2;
    pub const SACK: u8 = 3;
    pub const HEARTBEAT: u8 = 4;
    pub const HEARTBEAT_ACK: u8 = 5;
    pub const ABORT: u8 = 6;
    pub const SHUTDOWN: u8 = 7;
    pub const SHUTDOWN_ACK: u8 = 8;
    pub const COOKIE_ECHO: u8 = 10;
    pub const COOKIE_ACK: u8 = 11;
    pub const SHUTDOWN_COMPLETE: u8 = 14;
}

/// CRC32c's polynomial, reflected.
pub const CRC32C_POLY: u32 = 0x82f6_3b78;
/// The polynomial 1 (x^0) in the reflected representation.
const ONE: u32 = 1 << 31;

/// The register times x, modulo the polynomial: one bit of a CRC step.
#[inline(always)]
const fn times_x(a: u32) -> u32 {
    (a >> 1) ^ (CRC32C_POLY & 0u32.wrapping_sub(a & 1))
}

/// `a * b` modulo the polynomial: a fixed 32 rounds without a branch, so
/// the verifier walks one path through it.
#[inline(always)]
pub const fn mul_mod(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    let mut i = 0;
    while i < 32 {
        // The coefficient of x^i in `a` is bit 31 - i; `b` is `b * x^i` now.
        product ^= b & 0u32.wrapping_sub((a >> (31 - i)) & 1);
        b = times_x(b);
        i += 1;
    }
    product
}

/// `x^(8 k 16^j)` modulo the polynomial at `[j][k]`: what running the
/// register over `k * 16^j` zero bytes multiplies it by.
const X_POW_8N_NIBBLES: [[u32; 16]; 4] = {
    let mut table = [[ONE; 16]; 4];
    // x^8: one zero byte.
    let mut unit = ONE;
    let mut i = 0;
    while i < 8 {
        unit = times_x(unit);
        i += 1;
    }
    let mut j = 0;
    while j < 4 {
        let mut k = 1;
        while k < 16 {
            table[j][k] = mul_mod(table[j][k - 1], unit);
            k += 1;
        }
        // The next nibble's unit: 16 times this one's.
        unit = mul_mod(table[j][15], unit);
        j += 1;
    }
    table
};

/// `x^(8 n)` modulo the polynomial: what running the register over `n`
/// zero bytes multiplies it by, `n` below 2^16 (an IPv4 packet's length).
/// One table entry per nibble of `n` and three products: no branch, a
/// fixed cost.
#[inline(always)]
pub const fn x_pow_8n(n: u32) -> u32 {
    let t = &X_POW_8N_NIBBLES;
    let low = mul_mod(t[0][(n & 15) as usize], t[1][((n >> 4) & 15) as usize]);
    let high = mul_mod(
        t[2][((n >> 8) & 15) as usize],
        t[3][((n >> 12) & 15) as usize],
    );
    mul_mod(low, high)
}

/// The CRC32c of an SCTP packet of `len` bytes whose checksum was `crc`,
/// after the four bytes at `offset` changed from `old` to `new` (each read
/// as `u32::from_le_bytes` of the four bytes, which is how a little-endian
/// machine, the BPF target included, loads them). `offset + 4 <= len`,
/// and the bytes are not the checksum's own.
#[inline(always)]
pub const fn crc32c_after_word_change(crc: u32, len: u32, offset: u32, old: u32, new: u32) -> u32 {
    // Running the register over the word d from zero multiplies it by
    // x^32 (its four bytes), then over the len - offset - 4 bytes after it.
    crc ^ mul_mod(x_pow_8n(len - offset), old ^ new)
}

/// The checksum of an SCTP packet whose ports (its first four bytes)
/// change from `old` to `new`, each as `(source, destination)` in network
/// order exactly as they sit in the packet.
#[inline(always)]
pub const fn crc32c_after_port_rewrite(
    crc: u32,
    len: u32,
    old: (u16, u16),
    new: (u16, u16),
) -> u32 {
    crc32c_after_word_change(crc, len, 0, ports_word(old), ports_word(new))
}

/// The first four bytes of the packet, loaded little-endian: the source
/// port's two bytes, then the destination's.
#[inline(always)]
const fn ports_word((src_be, dst_be): (u16, u16)) -> u32 {
    let src = src_be.to_ne_bytes();
    let dst = dst_be.to_ne_bytes();
    u32::from_le_bytes([src[0], src[1], dst[0], dst[1]])
}

/// CRC32c of `data`, the whole way (the host's reference; the datapath
/// only updates). Bitwise: for tests and crafted packets.
pub fn crc32c(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |crc, &byte| crc_byte(crc, byte))
}

/// The checksum an SCTP packet (`sctp`: from the common header on) must
/// carry: CRC32c over it with the checksum field zeroed.
pub fn packet_crc32c(sctp: &[u8]) -> u32 {
    let field = SCTP_CSUM_OFF..SCTP_CSUM_OFF + 4;
    !sctp.iter().enumerate().fold(!0u32, |crc, (i, &byte)| {
        crc_byte(crc, if field.contains(&i) { 0 } else { byte })
    })
}

/// The register after one more byte.
fn crc_byte(crc: u32, byte: u8) -> u32 {
    (0..8).fold(crc ^ u32::from(byte), |crc, _| times_x(crc))
}

#[cfg(test)]
mod tests;
