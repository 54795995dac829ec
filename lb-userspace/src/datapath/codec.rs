//! The one place that knows how the model is laid out in the maps
//! (`lb-common`'s types), in both directions. Everything above it speaks
//! `IpAddr`, `FrontendKind`, `WhenEmpty` and flags as booleans; a family the
//! maps cannot hold yet is an error here, never a truncated address. A map
//! value this agent does not understand (written by another version)
//! decodes to `None` rather than to a guess.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use aya::maps::lpm_trie;
use lb_common::algorithm::{ALGORITHM_LEAST_CONNECTIONS, ALGORITHM_RANDOM, algorithm_flags};
use lb_common::snat::FE_FLAG_MASQUERADE;

use lb_common::{
    ALGORITHM_MAGLEV, BE_FLAG_LOCAL, BE_FLAG_REMOTE, BE_FLAG_TERMINATING, Backend4,
    FE_AFFINITY_SHIFT, FE_FLAG_EMPTY_DROP, FE_KIND_CLUSTER_IP, FE_KIND_EXTERNAL_IP,
    FE_KIND_LOAD_BALANCER, FE_KIND_NODE_PORT, FE_KIND_SHIFT, Frontend4Key, FrontendValue,
    MAX_AFFINITY_TIMEOUT_S, SCOPE_EXTERNAL, SCOPE_INTERNAL, SOURCE_RANGE_ID_BITS,
    SVC_FLAG_EXTERNAL_LOCAL, SVC_FLAG_INTERNAL_LOCAL, SVC_FLAG_TOPOLOGY, ServiceInfo, SourceRange4,
};

use crate::model::{
    Algorithm, Backend, Frontend, FrontendKind, Protocol, Scope, ServicePortInfo, ServicePortName,
    SourceRange, WhenEmpty,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("{0}: IPv6 is not in the datapath yet (IPv4 only): serve this Service over IPv4")]
    Family(IpAddr),
}

fn ipv4_be(addr: IpAddr) -> Result<u32, CodecError> {
    match addr {
        IpAddr::V4(v4) => Ok(u32::from_ne_bytes(v4.octets())),
        IpAddr::V6(_) => Err(CodecError::Family(addr)),
    }
}

/// An address field as the maps store it (network byte order in memory).
pub fn ipv4_from_be(addr_be: u32) -> Ipv4Addr {
    Ipv4Addr::from(addr_be.to_ne_bytes())
}

/// An address and port pair as the maps store them.
pub fn socket_from_be(addr_be: u32, port_be: u16) -> SocketAddr {
    SocketAddr::new(ipv4_from_be(addr_be).into(), u16::from_be(port_be))
}

const fn scope_code(scope: Scope) -> u8 {
    match scope {
        Scope::External => SCOPE_EXTERNAL,
        Scope::Internal => SCOPE_INTERNAL,
    }
}

/// The frontend map key of a frontend.
pub fn frontend_key(frontend: &Frontend) -> Result<Frontend4Key, CodecError> {
    Ok(Frontend4Key {
        addr_be: ipv4_be(frontend.addr)?,
        port_be: frontend.port.to_be(),
        proto: frontend.protocol.ip_number(),
        scope: scope_code(frontend.scope),
    })
}

/// A frontend map key in model terms; `None` for a protocol or scope this
/// agent does not know.
pub fn frontend_from_key(key: &Frontend4Key) -> Option<Frontend> {
    let address = key_address(key);
    Some(Frontend {
        addr: address.ip(),
        port: address.port(),
        protocol: Protocol::from_ip_number(key.proto)?,
        scope: key_scope(key)?,
    })
}

/// The address and port of a frontend key, whatever its protocol.
pub fn key_address(key: &Frontend4Key) -> SocketAddr {
    socket_from_be(key.addr_be, key.port_be)
}

/// The scope of a frontend key; `None` for a code this agent does not know.
pub fn key_scope(key: &Frontend4Key) -> Option<Scope> {
    match key.scope {
        SCOPE_EXTERNAL => Some(Scope::External),
        SCOPE_INTERNAL => Some(Scope::Internal),
        _ => None,
    }
}

/// A frontend map value in model terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontendEntry {
    pub service_id: u32,
    /// Meaningless when `backend_count` is 0.
    pub table_id: u32,
    /// 0: new traffic meets `when_empty`.
    pub backend_count: u32,
    /// `None` for a kind this agent does not know.
    pub kind: Option<FrontendKind>,
    pub when_empty: WhenEmpty,
    /// ClientIP session affinity timeout in seconds; 0: none.
    pub affinity_timeout_s: u32,
    /// New connections are masqueraded to the node's address
    /// (`lb_common::snat::FE_FLAG_MASQUERADE`).
    pub masquerade: bool,
    /// New connections' sources are checked against the Service port's
    /// ranges (`FE_FLAG_SOURCE_RANGES`).
    pub source_ranges: bool,
    /// How new flows pick a backend (`lb_common::algorithm`, flags bits 4-5).
    pub algorithm: Algorithm,
}

pub(crate) const fn kind_code(kind: FrontendKind) -> u32 {
    match kind {
        FrontendKind::ClusterIp => FE_KIND_CLUSTER_IP,
        FrontendKind::NodePort => FE_KIND_NODE_PORT,
        FrontendKind::LoadBalancer => FE_KIND_LOAD_BALANCER,
        FrontendKind::ExternalIp => FE_KIND_EXTERNAL_IP,
    }
}

fn kind_from_code(code: u32) -> Option<FrontendKind> {
    match code {
        FE_KIND_CLUSTER_IP => Some(FrontendKind::ClusterIp),
        FE_KIND_NODE_PORT => Some(FrontendKind::NodePort),
        FE_KIND_LOAD_BALANCER => Some(FrontendKind::LoadBalancer),
        FE_KIND_EXTERNAL_IP => Some(FrontendKind::ExternalIp),
        _ => None,
    }
}

/// The frontend map value of an entry.
pub fn frontend_value(entry: &FrontendEntry) -> FrontendValue {
    let mut flags = entry.kind.map_or(0, kind_code) << FE_KIND_SHIFT;
    if entry.when_empty == WhenEmpty::Drop {
        flags |= FE_FLAG_EMPTY_DROP;
    }
    // The model holds at most 86400 (the API's limit); more cannot be
    // stored, so the largest storable timeout stands in.
    flags |= entry.affinity_timeout_s.min(MAX_AFFINITY_TIMEOUT_S) << FE_AFFINITY_SHIFT;
    if entry.masquerade {
        flags |= FE_FLAG_MASQUERADE;
    }
    if entry.source_ranges {
        flags |= lb_common::FE_FLAG_SOURCE_RANGES;
    }
    flags |= algorithm_flags(algorithm_code(entry.algorithm));
    FrontendValue {
        service_id: entry.service_id,
        table_id: entry.table_id,
        backend_count: entry.backend_count,
        flags,
    }
}

/// A frontend map value in model terms.
pub fn frontend_entry(value: &FrontendValue) -> FrontendEntry {
    FrontendEntry {
        service_id: value.service_id,
        table_id: value.table_id,
        backend_count: value.backend_count,
        kind: kind_from_code(value.kind()),
        when_empty: if value.flags & FE_FLAG_EMPTY_DROP != 0 {
            WhenEmpty::Drop
        } else {
            WhenEmpty::Reject
        },
        affinity_timeout_s: value.affinity_timeout_s(),
        masquerade: lb_common::snat::masquerades(value),
        source_ranges: value.has_source_ranges(),
        algorithm: algorithm_from_code(value.algorithm()),
    }
}

/// The `ALGORITHM_*` code of an algorithm (frontend flags, service map).
pub const fn algorithm_code(algorithm: Algorithm) -> u8 {
    match algorithm {
        Algorithm::Maglev => ALGORITHM_MAGLEV,
        Algorithm::Random => ALGORITHM_RANDOM,
        Algorithm::LeastConnections => ALGORITHM_LEAST_CONNECTIONS,
    }
}

/// The algorithm of an `ALGORITHM_*` code; an unknown one reads as Maglev,
/// as the datapath reads it.
pub const fn algorithm_from_code(code: u8) -> Algorithm {
    match code {
        ALGORITHM_RANDOM => Algorithm::Random,
        ALGORITHM_LEAST_CONNECTIONS => Algorithm::LeastConnections,
        _ => Algorithm::Maglev,
    }
}

/// What the datapath and operators know about a backend besides its address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendFlags {
    /// Chosen only as a fallback: no ready endpoint was left.
    pub terminating: bool,
    /// The endpoint is on this node.
    pub local: bool,
    /// The endpoint's slice names another node.
    pub remote: bool,
}

impl BackendFlags {
    /// The flags of a backend several frontends use: a flag holds only if
    /// it holds for every one of them.
    pub fn both(self, other: BackendFlags) -> BackendFlags {
        BackendFlags {
            terminating: self.terminating && other.terminating,
            local: self.local && other.local,
            remote: self.remote && other.remote,
        }
    }
}

/// The backend map value of a backend, with its flags.
pub fn backend_value(backend: &Backend, flags: BackendFlags) -> Result<Backend4, CodecError> {
    let mut bits = 0;
    if flags.terminating {
        bits |= BE_FLAG_TERMINATING;
    }
    if flags.local {
        bits |= BE_FLAG_LOCAL;
    }
    if flags.remote {
        bits |= BE_FLAG_REMOTE;
    }
    Ok(Backend4 {
        addr_be: ipv4_be(backend.addr)?,
        port_be: backend.port.to_be(),
        proto: backend.protocol.ip_number(),
        flags: bits,
    })
}

/// A backend map value in model terms; `None` for a protocol this agent
/// does not know (written by another version).
pub fn backend_from_value(value: &Backend4) -> Option<Backend> {
    Some(Backend {
        addr: IpAddr::V4(ipv4_from_be(value.addr_be)),
        port: u16::from_be(value.port_be),
        protocol: Protocol::from_ip_number(value.proto)?,
    })
}

pub fn backend_flags(value: &Backend4) -> BackendFlags {
    BackendFlags {
        terminating: value.flags & BE_FLAG_TERMINATING != 0,
        local: value.flags & BE_FLAG_LOCAL != 0,
        remote: value.flags & BE_FLAG_REMOTE != 0,
    }
}

/// The identity of a backend value (its flags aside): two values with the
/// same identity are the same backend and share an id.
pub fn backend_identity(value: &Backend4) -> (u32, u16, u8) {
    (value.addr_be, value.port_be, value.proto)
}

/// The service map's value for a service port. `desired` refuses names
/// longer than the map's fields (a `name-too-long` problem), so none
/// reaches this point; `fixed` still never writes past a field.
pub fn service_info(name: &ServicePortName, info: &ServicePortInfo) -> ServiceInfo {
    let mut flags = 0;
    if info.external_policy_local {
        flags |= SVC_FLAG_EXTERNAL_LOCAL;
    }
    if info.internal_policy_local {
        flags |= SVC_FLAG_INTERNAL_LOCAL;
    }
    if info.topology_aware {
        flags |= SVC_FLAG_TOPOLOGY;
    }
    ServiceInfo {
        namespace: fixed(&name.namespace),
        name: fixed(&name.name),
        port_name: fixed(&name.port_name),
        port_be: info.port.to_be(),
        proto: name.protocol.ip_number(),
        flags,
        algorithm: ALGORITHM_MAGLEV,
        _pad: [0; 3],
    }
}

/// Reads a service map value back; `None` if it is not one we wrote.
pub fn service_from_info(value: &ServiceInfo) -> Option<(ServicePortName, ServicePortInfo)> {
    let name = ServicePortName {
        namespace: unfixed(&value.namespace)?,
        name: unfixed(&value.name)?,
        port_name: unfixed(&value.port_name)?,
        protocol: Protocol::from_ip_number(value.proto)?,
    };
    let info = ServicePortInfo {
        port: u16::from_be(value.port_be),
        external_policy_local: value.flags & SVC_FLAG_EXTERNAL_LOCAL != 0,
        internal_policy_local: value.flags & SVC_FLAG_INTERNAL_LOCAL != 0,
        topology_aware: value.flags & SVC_FLAG_TOPOLOGY != 0,
        listed: Vec::new(),
    };
    Some((name, info))
}

/// NUL-padded, always NUL-terminated.
fn fixed<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [0; N];
    let len = text.len().min(N - 1);
    out[..len].copy_from_slice(&text.as_bytes()[..len]);
    out
}

fn unfixed(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8(bytes[..end].to_vec()).ok()
}

/// `addr:port/PROTO (scope)`, readable even for values of another version.
pub fn describe_frontend(key: &Frontend4Key) -> String {
    let scope = match key_scope(key) {
        Some(Scope::External) => "external".to_string(),
        Some(Scope::Internal) => "internal".to_string(),
        None => format!("scope {}", key.scope),
    };
    format!(
        "{}/{} ({scope})",
        key_address(key),
        protocol_name(key.proto)
    )
}

/// `addr:port/PROTO`, readable even for values of another version.
pub fn describe_backend(value: &Backend4) -> String {
    format!(
        "{}/{}",
        socket_from_be(value.addr_be, value.port_be),
        protocol_name(value.proto)
    )
}

/// `TCP`, `UDP`, `SCTP`, or the number of a protocol this agent does not know.
pub fn protocol_name(number: u8) -> String {
    Protocol::from_ip_number(number).map_or_else(|| number.to_string(), |p| p.to_string())
}

#[cfg(test)]
mod tests;

/// The source-range trie's key of one allowed range of a Service port.
pub fn source_range_key(service_id: u32, range: &SourceRange) -> lpm_trie::Key<SourceRange4> {
    lpm_trie::Key::new(
        SOURCE_RANGE_ID_BITS + u32::from(range.prefix_len),
        SourceRange4 {
            service_id,
            addr_be: u32::from_ne_bytes(range.network.octets()),
        },
    )
}

/// The Service port id and range of a trie key; `None` for a key this
/// agent would not write (a prefix shorter than the id).
pub fn source_range_from_key(key: &lpm_trie::Key<SourceRange4>) -> Option<(u32, SourceRange)> {
    let prefix_len = key.prefix_len().checked_sub(SOURCE_RANGE_ID_BITS)?;
    let data = key.data();
    let range = SourceRange::new(
        std::net::Ipv4Addr::from(data.addr_be.to_ne_bytes()),
        u8::try_from(prefix_len).ok()?,
    )?;
    Some((data.service_id, range))
}
