//! Round trips for every value the codec writes, and the exact bits of the
//! layouts the kernel reads (a change there is a datapath contract change).

use std::net::{Ipv4Addr, Ipv6Addr};

use lb_common::{NAME_LEN, PORT_NAME_LEN, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

use super::*;
use crate::model::Algorithm;

const KINDS: [FrontendKind; 4] = [
    FrontendKind::ClusterIp,
    FrontendKind::NodePort,
    FrontendKind::LoadBalancer,
    FrontendKind::ExternalIp,
];
const PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

fn frontend(protocol: Protocol, scope: Scope) -> Frontend {
    Frontend {
        addr: Ipv4Addr::new(192, 0, 2, 10).into(),
        port: 30080,
        protocol,
        scope,
    }
}

fn backend(protocol: Protocol) -> Backend {
    Backend {
        addr: Ipv4Addr::new(10, 244, 1, 5).into(),
        port: 8443,
        protocol,
    }
}

#[test]
fn frontend_keys_round_trip() {
    for protocol in PROTOCOLS {
        for scope in [Scope::External, Scope::Internal] {
            let fe = frontend(protocol, scope);
            let key = frontend_key(&fe).unwrap();
            assert_eq!(frontend_from_key(&key), Some(fe));
        }
    }
}

#[test]
fn frontend_key_layout_is_network_order() {
    let key = frontend_key(&frontend(Protocol::Udp, Scope::Internal)).unwrap();
    assert_eq!(key.addr_be.to_ne_bytes(), [192, 0, 2, 10]);
    assert_eq!(key.port_be.to_ne_bytes(), 30080u16.to_be_bytes());
    assert_eq!((key.proto, key.scope), (PROTO_UDP, SCOPE_INTERNAL));
    assert_eq!(describe_frontend(&key), "192.0.2.10:30080/UDP (internal)");
}

#[test]
fn unknown_key_codes_decode_to_none_and_still_describe() {
    let mut key = frontend_key(&frontend(Protocol::Tcp, Scope::External)).unwrap();
    key.scope = 7;
    assert_eq!(frontend_from_key(&key), None);
    assert_eq!(describe_frontend(&key), "192.0.2.10:30080/TCP (scope 7)");
    key.scope = SCOPE_EXTERNAL;
    key.proto = 99;
    assert_eq!(frontend_from_key(&key), None);
    assert_eq!(describe_frontend(&key), "192.0.2.10:30080/99 (external)");
}

#[test]
fn frontend_values_round_trip() {
    for kind in KINDS.map(Some).into_iter().chain([None]) {
        for when_empty in [WhenEmpty::Reject, WhenEmpty::Drop] {
            for affinity_timeout_s in [0, 1, 10_800, 86_400] {
                for ((masquerade, source_ranges), algorithm) in
                    [(false, false), (true, false), (false, true), (true, true)]
                        .into_iter()
                        .zip(Algorithm::ALL.into_iter().cycle())
                {
                    let entry = FrontendEntry {
                        service_id: 16_383,
                        table_id: 2047,
                        backend_count: 3,
                        kind,
                        when_empty,
                        affinity_timeout_s,
                        masquerade,
                        source_ranges,
                        algorithm,
                    };
                    assert_eq!(frontend_entry(&frontend_value(&entry)), entry);
                }
            }
        }
    }
}

#[test]
fn frontend_value_flags_are_the_kernels() {
    let value = frontend_value(&FrontendEntry {
        service_id: 1,
        table_id: 0,
        backend_count: 0,
        kind: Some(FrontendKind::NodePort),
        when_empty: WhenEmpty::Drop,
        affinity_timeout_s: 10_800,
        masquerade: true,
        source_ranges: true,
        algorithm: Algorithm::LeastConnections,
    });
    assert_eq!(
        value.flags,
        FE_KIND_NODE_PORT << FE_KIND_SHIFT
            | FE_FLAG_EMPTY_DROP
            | 1 << 1
            | 1 << 2
            | 2 << 4
            | 10_800 << 12
    );
    assert_eq!(
        value.algorithm(),
        lb_common::algorithm::ALGORITHM_LEAST_CONNECTIONS
    );
    assert_eq!(value.kind(), FE_KIND_NODE_PORT);
    assert_eq!(value.affinity_timeout_s(), 10_800);
}

#[test]
fn backend_values_round_trip_with_every_flag() {
    for protocol in PROTOCOLS {
        for bits in 0..8u8 {
            let flags = BackendFlags {
                terminating: bits & 1 != 0,
                local: bits & 2 != 0,
                remote: bits & 4 != 0,
            };
            let value = backend_value(&backend(protocol), flags).unwrap();
            assert_eq!(backend_from_value(&value), Some(backend(protocol)));
            assert_eq!(backend_flags(&value), flags);
        }
    }
}

#[test]
fn backend_layout_and_identity() {
    let flags = BackendFlags {
        terminating: true,
        local: true,
        remote: false,
    };
    let value = backend_value(&backend(Protocol::Sctp), flags).unwrap();
    assert_eq!(value.flags, BE_FLAG_TERMINATING | BE_FLAG_LOCAL);
    assert_eq!(value.proto, PROTO_SCTP);
    let plain = backend_value(&backend(Protocol::Sctp), BackendFlags::default()).unwrap();
    assert_eq!(backend_identity(&value), backend_identity(&plain));
    assert_eq!(describe_backend(&value), "10.244.1.5:8443/SCTP");
}

#[test]
fn flags_of_a_shared_backend_hold_only_if_they_hold_for_all() {
    let both = BackendFlags {
        terminating: true,
        local: true,
        remote: false,
    };
    let local = BackendFlags {
        terminating: false,
        local: true,
        remote: false,
    };
    assert_eq!(both.both(local), local);
    assert_eq!(local.both(BackendFlags::default()), BackendFlags::default());
}

#[test]
fn unknown_backend_protocol_decodes_to_none() {
    let mut value = backend_value(&backend(Protocol::Tcp), BackendFlags::default()).unwrap();
    value.proto = 99;
    assert_eq!(backend_from_value(&value), None);
    assert_eq!(describe_backend(&value), "10.244.1.5:8443/99");
}

#[test]
fn ipv6_is_a_family_error_never_a_truncated_address() {
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let fe = Frontend {
        addr: v6,
        ..frontend(Protocol::Tcp, Scope::External)
    };
    assert_eq!(frontend_key(&fe), Err(CodecError::Family(v6)));
    let be = Backend {
        addr: v6,
        ..backend(Protocol::Tcp)
    };
    let err = backend_value(&be, BackendFlags::default()).unwrap_err();
    assert_eq!(err, CodecError::Family(v6));
    assert!(err.to_string().contains("IPv4"), "{err}");
}

fn port_name(name: &str, port_name: &str, protocol: Protocol) -> ServicePortName {
    ServicePortName {
        namespace: "default".into(),
        name: name.into(),
        port_name: port_name.into(),
        protocol,
    }
}

#[test]
fn service_infos_round_trip_with_every_flag() {
    for protocol in PROTOCOLS {
        for bits in 0..8u8 {
            let name = port_name("web", "https", protocol);
            let info = ServicePortInfo {
                port: 443,
                external_policy_local: bits & 1 != 0,
                internal_policy_local: bits & 2 != 0,
                topology_aware: bits & 4 != 0,
                listed: Vec::new(),
            };
            let value = service_info(&name, &info);
            assert_eq!(value.algorithm, ALGORITHM_MAGLEV);
            assert_eq!(service_from_info(&value), Some((name, info)));
        }
    }
}

#[test]
fn longest_kubernetes_names_fit_and_longer_ones_are_cut() {
    let info = ServicePortInfo {
        port: 80,
        external_policy_local: false,
        internal_policy_local: false,
        topology_aware: false,
        listed: Vec::new(),
    };
    let longest = port_name(
        &"n".repeat(NAME_LEN - 1),
        &"p".repeat(PORT_NAME_LEN - 1),
        Protocol::Tcp,
    );
    let value = service_info(&longest, &info);
    assert_eq!(service_from_info(&value).unwrap().0, longest);
    let too_long = port_name(&"n".repeat(NAME_LEN + 5), "", Protocol::Tcp);
    let cut = service_from_info(&service_info(&too_long, &info))
        .unwrap()
        .0;
    assert_eq!(cut.name.len(), NAME_LEN - 1);
}

#[test]
fn service_info_of_another_version_decodes_to_none() {
    let name = port_name("web", "", Protocol::Tcp);
    let info = ServicePortInfo {
        port: 80,
        external_policy_local: false,
        internal_policy_local: false,
        topology_aware: false,
        listed: Vec::new(),
    };
    let mut value = service_info(&name, &info);
    value.proto = PROTO_TCP + 1;
    assert_eq!(service_from_info(&value), None);
    let mut value = service_info(&name, &info);
    value.name[0] = 0xff;
    assert_eq!(service_from_info(&value), None, "not UTF-8");
}

#[test]
fn sockets_decode_from_network_order() {
    let addr = Ipv4Addr::new(203, 0, 113, 7);
    let socket = socket_from_be(u32::from_ne_bytes(addr.octets()), 53u16.to_be());
    assert_eq!(socket.to_string(), "203.0.113.7:53");
    assert_eq!(protocol_name(PROTO_UDP), "UDP");
}

/// The trie key: the Service port id matched whole, then the range's
/// prefix of the address, in network order as packets carry it.
#[test]
fn source_range_keys_round_trip_and_match_the_kernels_layout() {
    use crate::model::SourceRange;
    let range = SourceRange::new(std::net::Ipv4Addr::new(203, 0, 113, 0), 24).unwrap();
    let key = source_range_key(7, &range);
    assert_eq!(key.prefix_len(), 32 + 24);
    assert_eq!(key.data().service_id, 7);
    assert_eq!(key.data().addr_be.to_ne_bytes(), [203, 0, 113, 0]);
    assert_eq!(source_range_from_key(&key), Some((7, range)));
}
