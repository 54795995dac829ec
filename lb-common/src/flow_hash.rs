//! The flow hash that picks a Maglev slot. It lives here so the datapath,
//! the agent's `trace` and the tests compute the very same value.
//!
//! It hashes the flow's own tuple and a per-cluster seed (`--hash-seed`,
//! the same on every node; no per-node secret), so every node maps a flow
//! to the same slot and, with identical Maglev tables, to the same backend:
//! a flow moved between nodes by an upstream ECMP change keeps its backend,
//! while outsiders who do not know the seed cannot aim flows at one backend.

/// A 32-bit avalanche finaliser (murmur3's fmix32).
#[inline(always)]
pub const fn mix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Hash of an IPv4 flow with seed 0. Addresses and ports are passed exactly
/// as they sit in the packet (network byte order), so no byte swapping is
/// needed on the hot path.
#[inline(always)]
pub const fn flow_hash4(
    src_addr_be: u32,
    dst_addr_be: u32,
    src_port_be: u16,
    dst_port_be: u16,
    proto: u8,
) -> u32 {
    flow_hash4_seeded(0, src_addr_be, dst_addr_be, src_port_be, dst_port_be, proto)
}

/// Hash of an IPv4 flow under the cluster's `seed`.
#[inline(always)]
pub const fn flow_hash4_seeded(
    seed: u32,
    src_addr_be: u32,
    dst_addr_be: u32,
    src_port_be: u16,
    dst_port_be: u16,
    proto: u8,
) -> u32 {
    let mut h = mix32(src_addr_be ^ 0x9e37_79b9 ^ seed);
    h = mix32(h ^ dst_addr_be);
    h = mix32(h ^ (((src_port_be as u32) << 16) | dst_port_be as u32));
    mix32(h ^ proto as u32)
}

/// Hash used by the socket hooks: one value per socket, so every datagram a
/// socket sends to a frontend goes to the same backend while the table holds.
#[inline(always)]
pub const fn socket_hash(cookie: u64, frontend_addr_be: u32, frontend_port_be: u16) -> u32 {
    let mut h = mix32(cookie as u32 ^ 0x85eb_ca6b);
    h = mix32(h ^ (cookie >> 32) as u32);
    h = mix32(h ^ frontend_addr_be);
    mix32(h ^ frontend_port_be as u32)
}

/// The Maglev slot for a hash.
#[inline(always)]
pub const fn maglev_slot(hash: u32) -> u32 {
    hash % crate::maps::MAGLEV_TABLE_SIZE
}
