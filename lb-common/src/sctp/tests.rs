extern crate std;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;

/// RFC 3720 appendix B.4 (iSCSI, the same CRC32c), and the catalogue's
/// check value of "123456789".
#[test]
fn crc32c_matches_the_published_vectors() {
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
    assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
    let ascending: Vec<u8> = (0..32).collect();
    assert_eq!(crc32c(&ascending), 0x46dd_794e);
    let descending: Vec<u8> = (0..32).rev().collect();
    assert_eq!(crc32c(&descending), 0x113f_db5c);
}

/// RFC 3720 B.4's iSCSI read command PDU: 48 bytes whose CRC32c is given.
#[test]
fn crc32c_of_the_rfc_3720_iscsi_pdu() {
    let pdu: [u8; 48] = [
        0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00,
        0x00, 0x18, 0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00,
    ];
    assert_eq!(crc32c(&pdu), 0xd9963a56);
}

#[test]
fn multiplication_by_one_and_by_x() {
    for a in [0u32, 1, 0x8000_0000, 0xdead_beef, 0x82f6_3b78] {
        assert_eq!(mul_mod(ONE, a), a);
        assert_eq!(mul_mod(a, ONE), a);
        assert_eq!(mul_mod(ONE >> 1, a), times_x(a));
    }
    assert_eq!(x_pow_8n(0), ONE);
    // One zero byte is eight steps of the register.
    let mut eight = ONE;
    for _ in 0..8 {
        eight = times_x(eight);
    }
    assert_eq!(x_pow_8n(1), eight);
}

/// An SCTP packet: common header (checksum filled in) and one chunk.
fn packet(ports: (u16, u16), chunk: &[u8]) -> Vec<u8> {
    let mut sctp = Vec::new();
    sctp.extend_from_slice(&ports.0.to_be_bytes());
    sctp.extend_from_slice(&ports.1.to_be_bytes());
    sctp.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    sctp.extend_from_slice(&[0; 4]);
    sctp.extend_from_slice(chunk);
    let crc = packet_crc32c(&sctp);
    sctp[8..12].copy_from_slice(&crc.to_le_bytes());
    sctp
}

fn stored_crc(sctp: &[u8]) -> u32 {
    u32::from_le_bytes(sctp[8..12].try_into().unwrap())
}

/// The update equals a full recompute for a destination rewrite (ingress)
/// and a source rewrite (replies).
#[test]
fn port_rewrite_update_equals_a_recompute() {
    let chunk = [
        1u8, 0, 0, 20, 0x10, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 1, 0, 1, 0x10, 0, 0, 0,
    ];
    let before = packet((40000, 30080), &chunk);
    let crc = stored_crc(&before);
    let old = (40000u16.to_be(), 30080u16.to_be());
    for new in [(40000u16, 8080u16), (9999, 30080), (1, 65535)] {
        let after = packet(new, &chunk);
        let new = (new.0.to_be(), new.1.to_be());
        let updated = crc32c_after_port_rewrite(crc, before.len() as u32, old, new);
        assert_eq!(updated, stored_crc(&after), "{new:?}");
    }
}

proptest! {
    /// For any packet and any four bytes changed (not the checksum's), the
    /// update equals the CRC of the changed packet computed from scratch.
    #[test]
    fn word_change_equals_recompute(
        mut sctp in proptest::collection::vec(any::<u8>(), 16..1600),
        at in 0usize..1600,
        word in any::<[u8; 4]>(),
    ) {
        let len = sctp.len();
        let offset = at % (len - 3);
        prop_assume!(offset + 4 <= SCTP_CSUM_OFF || offset >= SCTP_CSUM_OFF + 4);
        let crc = packet_crc32c(&sctp);
        let old = u32::from_le_bytes(sctp[offset..offset + 4].try_into().unwrap());
        sctp[offset..offset + 4].copy_from_slice(&word);
        let new = u32::from_le_bytes(word);
        let updated = crc32c_after_word_change(crc, len as u32, offset as u32, old, new);
        prop_assert_eq!(updated, packet_crc32c(&sctp));
    }

    #[test]
    fn port_rewrite_on_any_length(
        payload in proptest::collection::vec(any::<u8>(), 4..9000),
        old in any::<(u16, u16)>(),
        new in any::<(u16, u16)>(),
    ) {
        let before = packet(old, &payload);
        let after = packet(new, &payload);
        let to_be = |(s, d): (u16, u16)| (s.to_be(), d.to_be());
        let updated = crc32c_after_port_rewrite(
            stored_crc(&before), before.len() as u32, to_be(old), to_be(new));
        prop_assert_eq!(updated, stored_crc(&after));
    }
}

/// The nibble tables agree with running the register over zero bytes one
/// at a time, at every length up to a jumbo frame and at the largest.
#[test]
fn x_pow_8n_is_n_zero_bytes_of_the_register() {
    let mut power = ONE;
    for n in 0..9100u32 {
        assert_eq!(x_pow_8n(n), power, "n = {n}");
        for _ in 0..8 {
            power = times_x(power);
        }
    }
    let mut power = ONE;
    for _ in 0..8 * 65535u32 {
        power = times_x(power);
    }
    assert_eq!(x_pow_8n(65535), power);
}
