extern crate std;

use proptest::prelude::*;

use super::*;
use crate::flow_hash::flow_hash4;
use crate::{PROTO_TCP, PROTO_UDP};

const CLIENT: Endpoint4 = Endpoint4::new(u32::from_ne_bytes([198, 51, 100, 7]), 40000u16.to_be());
const FRONTEND: Endpoint4 = Endpoint4::new(u32::from_ne_bytes([192, 0, 2, 10]), 30080u16.to_be());
const BACKEND: Endpoint4 = Endpoint4::new(u32::from_ne_bytes([10, 244, 1, 5]), 8080u16.to_be());

fn value(nat: Endpoint4) -> Ct4Value {
    Ct4Value {
        nat_addr_be: nat.addr_be,
        nat_port_be: nat.port_be,
        state: crate::ct::CT_ESTABLISHED,
        flags: 0,
        backend_id: 1,
        service_id: 7,
        created_s: 1,
        last_seen_s: 2,
        peer_addr_be: 0,
        peer_port_be: 0,
        checked_gen: 0,
    }
}

fn endpoint() -> impl Strategy<Value = Endpoint4> {
    (any::<u32>(), any::<u16>()).prop_map(|(a, p)| Endpoint4::new(a, p))
}

fn flow() -> impl Strategy<Value = Flow4> {
    (
        endpoint(),
        endpoint(),
        prop_oneof![Just(PROTO_TCP), Just(PROTO_UDP)],
    )
        .prop_map(|(src, dst, proto)| Flow4::new(src, dst, proto))
}

#[test]
fn the_original_key_is_the_tuple_as_sent() {
    let key = Ct4Key::original(Flow4::new(CLIENT, FRONTEND, PROTO_TCP));
    assert_eq!(
        key,
        Ct4Key {
            src_addr_be: CLIENT.addr_be,
            dst_addr_be: FRONTEND.addr_be,
            src_port_be: CLIENT.port_be,
            dst_port_be: FRONTEND.port_be,
            proto: PROTO_TCP,
            dir: CT_DIR_ORIGINAL,
            _pad: [0; 2],
        }
    );
    assert!(key.is_original() && !key.is_reply());
}

#[test]
fn the_reply_key_is_backend_to_client() {
    let key = Ct4Key::reply(Flow4::new(CLIENT, FRONTEND, PROTO_UDP).reply_via(BACKEND));
    assert_eq!(
        key,
        Ct4Key {
            src_addr_be: BACKEND.addr_be,
            dst_addr_be: CLIENT.addr_be,
            src_port_be: BACKEND.port_be,
            dst_port_be: CLIENT.port_be,
            proto: PROTO_UDP,
            dir: CT_DIR_REPLY,
            _pad: [0; 2],
        }
    );
    assert!(key.is_reply() && !key.is_original());
}

#[test]
fn an_unknown_direction_reads_back_as_nothing() {
    let key = Flow4::new(CLIENT, FRONTEND, PROTO_TCP).key(7);
    let value = value(BACKEND);
    assert_eq!(key.original_flow(&value), None);
    assert_eq!(key.backend(&value), None);
    assert!(!key.is_original() && !key.is_reply());
}

#[test]
fn socket_key_holds_cookie_and_backend() {
    let key = SockRevNat4Key::new(0x0102_0304_0506_0708, BACKEND);
    assert_eq!(
        key,
        SockRevNat4Key {
            cookie: 0x0102_0304_0506_0708,
            backend_addr_be: BACKEND.addr_be,
            backend_port_be: BACKEND.port_be,
            _pad: 0,
        }
    );
    assert_eq!(key.backend(), BACKEND);
    let value = SockRevNat4Value::new(FRONTEND, 7);
    assert_eq!(
        value,
        SockRevNat4Value {
            frontend_addr_be: FRONTEND.addr_be,
            frontend_port_be: FRONTEND.port_be,
            _pad: 0,
            service_id: 7,
        }
    );
    assert_eq!(value.frontend(), FRONTEND);
}

#[test]
fn a_backend_names_its_endpoint() {
    let backend = Backend4 {
        addr_be: BACKEND.addr_be,
        port_be: BACKEND.port_be,
        proto: PROTO_TCP,
        flags: 0,
    };
    assert_eq!(backend.endpoint(), BACKEND);
}

proptest! {
    /// The reply entry is keyed by the reversed original with the backend
    /// in place of the frontend.
    #[test]
    fn the_reply_key_is_the_reversed_translated_original(flow in flow(), backend in endpoint()) {
        let reply = Ct4Key::reply(flow.reply_via(backend));
        let original = Ct4Key::original(flow.with_destination(backend));
        prop_assert_eq!(reply.flow(), original.flow().reversed());
        prop_assert_eq!(reply.flow().reversed().src, flow.src);
        prop_assert_eq!(reply.flow().src, backend);
    }

    /// Padding is zero, whatever the tuple: the kernel hashes whole keys.
    #[test]
    fn keys_have_zeroed_padding(flow in flow(), backend in endpoint(), cookie in any::<u64>()) {
        for key in [Ct4Key::original(flow), Ct4Key::reply(flow.reply_via(backend))] {
            prop_assert_eq!(&bytemuck::bytes_of(&key)[14..], &[0u8, 0][..]);
        }
        let sock = SockRevNat4Key::new(cookie, backend);
        prop_assert_eq!(&bytemuck::bytes_of(&sock)[14..], &[0u8, 0][..]);
        let sock = SockRevNat4Value::new(flow.dst, cookie as u32);
        prop_assert_eq!(&bytemuck::bytes_of(&sock)[6..8], &[0u8, 0][..]);
    }

    /// Both entries a new flow gets read back as that flow and its backend.
    #[test]
    fn both_entries_read_back_as_the_original_flow(flow in flow(), backend in endpoint()) {
        let original = (Ct4Key::original(flow), value(backend));
        let reply = (Ct4Key::reply(flow.reply_via(backend)), value(flow.dst));
        for (key, value) in [original, reply] {
            prop_assert_eq!(key.original_flow(&value), Some(flow));
            prop_assert_eq!(key.backend(&value), Some(backend));
        }
    }

    #[test]
    fn reversing_twice_is_the_same_flow(flow in flow()) {
        prop_assert_eq!(flow.reversed().reversed(), flow);
        prop_assert_eq!(Ct4Key::original(flow).flow(), flow);
    }

    #[test]
    fn the_flow_hash_is_flow_hash4(flow in flow()) {
        prop_assert_eq!(
            flow.hash(),
            flow_hash4(flow.src.addr_be, flow.dst.addr_be, flow.src.port_be, flow.dst.port_be, flow.proto)
        );
    }
}
