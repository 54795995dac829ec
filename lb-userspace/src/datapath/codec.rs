//! The one place that knows how the model is laid out in the maps
//! (`lb-common`'s types), in both directions. Everything above it speaks
//! `IpAddr`; a family the maps cannot hold yet is an error here, never a
//! truncated address.

use std::net::{IpAddr, Ipv4Addr};

use lb_common::{Backend4, Frontend4Key};

use crate::model::{Backend, Frontend, Protocol};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("{0}: IPv6 is not in the datapath yet (IPv4 only)")]
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

/// The frontend map key of a frontend.
pub fn frontend_key(frontend: &Frontend) -> Result<Frontend4Key, CodecError> {
    Ok(Frontend4Key {
        addr_be: ipv4_be(frontend.addr)?,
        port_be: frontend.port.to_be(),
        proto: frontend.protocol.ip_number(),
        scope: frontend.scope.code(),
    })
}

/// The backend map value of a backend, with its flags.
pub fn backend_value(backend: &Backend, flags: u8) -> Result<Backend4, CodecError> {
    Ok(Backend4 {
        addr_be: ipv4_be(backend.addr)?,
        port_be: backend.port.to_be(),
        proto: backend.protocol.ip_number(),
        flags,
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
