use super::*;

fn nested(kind: u16, attrs: &[Vec<u8>]) -> Vec<u8> {
    attribute(kind | 0x8000, &attrs.concat())
}

#[test]
fn a_request_is_a_header_a_generic_header_and_padded_attributes() {
    let name = attribute(CTRL_ATTR_FAMILY_NAME, b"netdev\0");
    // 4 bytes of header, 7 of name, one of padding.
    assert_eq!(name.len(), 12);
    let message = message(
        GENL_ID_CTRL,
        CTRL_CMD_GETFAMILY,
        NLM_F_REQUEST | NLM_F_ACK,
        9,
        &name,
    );
    assert_eq!(message.len(), 16 + 4 + 12);
    let parsed = messages(&message);
    assert_eq!(parsed.len(), 1);
    let (kind, seq, body) = parsed[0];
    assert_eq!((kind, seq), (GENL_ID_CTRL, 9));
    assert_eq!(body[0], CTRL_CMD_GETFAMILY);
    assert_eq!(
        attributes(&body[GENL_HEADER..]),
        vec![(CTRL_ATTR_FAMILY_NAME, &b"netdev\0"[..])]
    );
}

#[test]
fn the_family_reply_gives_its_id_and_the_mgmt_group() {
    let groups = nested(
        CTRL_ATTR_MCAST_GROUPS,
        &[
            nested(
                1,
                &[
                    attribute(CTRL_ATTR_MCAST_GRP_NAME, b"page-pool\0"),
                    attribute(CTRL_ATTR_MCAST_GRP_ID, &7u32.to_ne_bytes()),
                ],
            ),
            nested(
                2,
                &[
                    attribute(CTRL_ATTR_MCAST_GRP_NAME, b"mgmt\0"),
                    attribute(CTRL_ATTR_MCAST_GRP_ID, &6u32.to_ne_bytes()),
                ],
            ),
        ],
    );
    let payload = [
        attribute(CTRL_ATTR_FAMILY_ID, &31u16.to_ne_bytes()),
        attribute(CTRL_ATTR_FAMILY_NAME, b"netdev\0"),
        groups,
    ]
    .concat();
    assert_eq!(family(&payload), Some((31, Some(6))));
    let without_groups = attribute(CTRL_ATTR_FAMILY_ID, &31u16.to_ne_bytes());
    assert_eq!(family(&without_groups), Some((31, None)));
    assert_eq!(family(&[]), None);
}

#[test]
fn a_device_reply_gives_its_ifindex_and_features() {
    let payload = [
        attribute(NETDEV_A_DEV_IFINDEX, &12u32.to_ne_bytes()),
        // The kernel puts a pad attribute before a 64-bit value.
        attribute(2, &[]),
        attribute(
            NETDEV_A_DEV_XDP_FEATURES,
            &(1u64 | 2 | 4 | 32 | 64).to_ne_bytes(),
        ),
    ]
    .concat();
    let napi = device(&payload).unwrap();
    assert_eq!(napi.ifindex, 12);
    assert!(napi.takes_redirects());
    // A veth whose other end runs no NAPI: basic, redirect, rx_sg.
    let quiet = [
        attribute(NETDEV_A_DEV_IFINDEX, &13u32.to_ne_bytes()),
        attribute(NETDEV_A_DEV_XDP_FEATURES, &(1u64 | 2 | 32).to_ne_bytes()),
    ]
    .concat();
    assert!(!device(&quiet).unwrap().takes_redirects());
    assert_eq!(
        device(&attribute(NETDEV_A_DEV_XDP_FEATURES, &4u64.to_ne_bytes())),
        None
    );
}

#[test]
fn truncated_datagrams_and_attributes_end_the_parse_instead_of_panicking() {
    let message = message(5, 1, NLM_F_REQUEST, 1, &attribute(1, &[1, 2, 3, 4]));
    for cut in 0..message.len() {
        let parsed = messages(&message[..cut]);
        assert!(parsed.is_empty(), "a message cut at {cut} bytes was read");
    }
    let attr = attribute(1, &[1, 2, 3, 4, 5]);
    for cut in 0..attr.len() {
        let _ = attributes(&attr[..cut]);
    }
    assert!(attributes(&[0xff, 0xff, 0, 0]).is_empty());
}
