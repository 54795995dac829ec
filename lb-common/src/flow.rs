//! Flow tuples and the one place connection-table and socket-translation
//! keys are built from them (and read back), for the datapath and for the
//! agent's readers alike: a key built twice by hand is a key that drifts.
//!
//! Addresses and ports stay in network byte order exactly as packets carry
//! them (the `_be` convention of the map types).

use crate::{
    Backend4, CT_DIR_ORIGINAL, CT_DIR_REPLY, CT_FLAG_SNAT, Ct4Key, Ct4Value, SockRevNat4Key,
    SockRevNat4Value, flow_hash::flow_hash4_seeded,
};

/// One end of a flow: an IPv4 address and a port, both in network order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint4 {
    pub addr_be: u32,
    pub port_be: u16,
}

impl Endpoint4 {
    #[inline(always)]
    pub const fn new(addr_be: u32, port_be: u16) -> Self {
        Self { addr_be, port_be }
    }
}

/// An IPv4 flow as one packet carries it: source, destination, protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow4 {
    pub src: Endpoint4,
    pub dst: Endpoint4,
    pub proto: u8,
}

impl Flow4 {
    #[inline(always)]
    pub const fn new(src: Endpoint4, dst: Endpoint4, proto: u8) -> Self {
        Self { src, dst, proto }
    }

    /// The same flow seen from the other end (what its replies carry).
    #[inline(always)]
    pub const fn reversed(self) -> Self {
        Self::new(self.dst, self.src, self.proto)
    }

    /// The same flow with its destination rewritten to `dst`.
    #[inline(always)]
    pub const fn with_destination(self, dst: Endpoint4) -> Self {
        Self::new(self.src, dst, self.proto)
    }

    /// What the replies of this flow carry once its destination is
    /// translated to `backend`: backend -> client.
    #[inline(always)]
    pub const fn reply_via(self, backend: Endpoint4) -> Self {
        self.with_destination(backend).reversed()
    }

    /// The connection-table key of this tuple in direction `dir`
    /// (`CT_DIR_*`), padding zeroed (the kernel hashes whole keys).
    #[inline(always)]
    pub const fn key(self, dir: u8) -> Ct4Key {
        Ct4Key {
            src_addr_be: self.src.addr_be,
            dst_addr_be: self.dst.addr_be,
            src_port_be: self.src.port_be,
            dst_port_be: self.dst.port_be,
            proto: self.proto,
            dir,
            _pad: [0; 2],
        }
    }

    /// The hash that picks this flow's Maglev slot (seed 0).
    #[inline(always)]
    pub const fn hash(self) -> u32 {
        self.hash_seeded(0)
    }

    /// The hash that picks this flow's Maglev slot under the cluster's seed.
    #[inline(always)]
    pub const fn hash_seeded(self, seed: u32) -> u32 {
        flow_hash4_seeded(
            seed,
            self.src.addr_be,
            self.dst.addr_be,
            self.src.port_be,
            self.dst.port_be,
            self.proto,
        )
    }
}

impl Ct4Key {
    /// The key of a flow's original entry: `flow` is client -> frontend, as
    /// the first packet carried it.
    #[inline(always)]
    pub const fn original(flow: Flow4) -> Self {
        flow.key(CT_DIR_ORIGINAL)
    }

    /// The key of a flow's reply entry: `reply` is backend -> client, as
    /// replies carry it (see [`Flow4::reply_via`]).
    #[inline(always)]
    pub const fn reply(reply: Flow4) -> Self {
        reply.key(CT_DIR_REPLY)
    }

    #[inline(always)]
    pub const fn is_original(&self) -> bool {
        self.dir == CT_DIR_ORIGINAL
    }

    #[inline(always)]
    pub const fn is_reply(&self) -> bool {
        self.dir == CT_DIR_REPLY
    }

    /// The tuple exactly as this key holds it (client -> frontend for an
    /// original entry, backend -> client for a reply entry).
    #[inline(always)]
    pub const fn flow(&self) -> Flow4 {
        Flow4::new(
            Endpoint4::new(self.src_addr_be, self.src_port_be),
            Endpoint4::new(self.dst_addr_be, self.dst_port_be),
            self.proto,
        )
    }

    /// The flow this entry belongs to as its client sent it (client ->
    /// frontend), whichever direction the entry is; `None` for a direction
    /// this build does not know.
    #[inline(always)]
    pub const fn original_flow(&self, value: &Ct4Value) -> Option<Flow4> {
        match self.dir {
            CT_DIR_ORIGINAL => Some(self.flow()),
            // The reply entry's value holds the frontend the client spoke to.
            CT_DIR_REPLY => Some(Flow4::new(
                value.client_of_reply(self),
                value.nat(),
                self.proto,
            )),
            _ => None,
        }
    }

    /// The backend the flow of this entry was translated to, whichever
    /// direction the entry is; `None` for a direction this build does not
    /// know.
    #[inline(always)]
    pub const fn backend(&self, value: &Ct4Value) -> Option<Endpoint4> {
        match self.dir {
            CT_DIR_ORIGINAL => Some(value.nat()),
            CT_DIR_REPLY => Some(self.flow().src),
            _ => None,
        }
    }
}

impl Ct4Value {
    /// The rewrite this entry asks for: the backend (original entry) or the
    /// frontend (reply entry).
    #[inline(always)]
    pub const fn nat(&self) -> Endpoint4 {
        Endpoint4::new(self.nat_addr_be, self.nat_port_be)
    }

    /// The second endpoint of a masqueraded flow (see `CT_FLAG_SNAT`).
    #[inline(always)]
    pub const fn peer(&self) -> Endpoint4 {
        Endpoint4::new(self.peer_addr_be, self.peer_port_be)
    }

    #[inline(always)]
    pub const fn is_snat(&self) -> bool {
        self.flags & CT_FLAG_SNAT != 0
    }

    /// The client of the flow whose reply entry (at `key`) this is: the
    /// key's destination, unless the flow is masqueraded (the key's
    /// destination is then the node's address and SNAT port).
    #[inline(always)]
    pub const fn client_of_reply(&self, key: &Ct4Key) -> Endpoint4 {
        if self.is_snat() {
            self.peer()
        } else {
            Endpoint4::new(key.dst_addr_be, key.dst_port_be)
        }
    }

    /// The tuple replies carry for the flow whose original entry this is
    /// (`flow` is client -> frontend): backend -> client, or backend ->
    /// the node's address and SNAT port when masqueraded.
    #[inline(always)]
    pub const fn reply_flow(&self, flow: Flow4) -> Flow4 {
        let reply = flow.reply_via(self.nat());
        if self.is_snat() {
            reply.with_destination(self.peer())
        } else {
            reply
        }
    }
}

impl Backend4 {
    #[inline(always)]
    pub const fn endpoint(&self) -> Endpoint4 {
        Endpoint4::new(self.addr_be, self.port_be)
    }
}

impl SockRevNat4Key {
    /// The key of the socket `cookie` translated to `backend`, padding
    /// zeroed.
    #[inline(always)]
    pub const fn new(cookie: u64, backend: Endpoint4) -> Self {
        Self {
            cookie,
            backend_addr_be: backend.addr_be,
            backend_port_be: backend.port_be,
            _pad: 0,
        }
    }

    #[inline(always)]
    pub const fn backend(&self) -> Endpoint4 {
        Endpoint4::new(self.backend_addr_be, self.backend_port_be)
    }
}

impl SockRevNat4Value {
    /// What a socket of the service port `service_id` asked for: `frontend`.
    #[inline(always)]
    pub const fn new(frontend: Endpoint4, service_id: u32) -> Self {
        Self {
            frontend_addr_be: frontend.addr_be,
            frontend_port_be: frontend.port_be,
            _pad: 0,
            service_id,
        }
    }

    #[inline(always)]
    pub const fn frontend(&self) -> Endpoint4 {
        Endpoint4::new(self.frontend_addr_be, self.frontend_port_be)
    }
}

#[cfg(test)]
mod tests;
