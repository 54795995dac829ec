//! Map names, sizes, keys and values.
//!
//! Names carry a layout version: a change to any key or value below gets a
//! new name (`..._v2`), and the agent migrates the pinned `_v1` map instead of
//! silently reinterpreting it.

use bytemuck::{Pod, Zeroable};

/// Frontends: `Frontend4Key -> FrontendValue` (hash).
pub const FRONTENDS4: &str = "lb_fe4_v1";
/// Backends: backend id (`u32`) -> `Backend4` (hash).
pub const BACKENDS4: &str = "lb_be4_v1";
/// Maglev tables: table id -> one inner array per table (an array of
/// maps), sized per backend count (see [`crate::maglev`]): slot 0 holds
/// the table's size, slots 1 to size the backend ids (`u32`). `_v2`: `_v1`
/// was one flat array of 1,021-slot tables (`table_id * 1021 + slot`),
/// carried over at load by the agent.
pub const MAGLEV: &str = "lb_maglev_v2";
/// The flat Maglev array of the version before per-Service sizes.
pub const MAGLEV_V1: &str = "lb_maglev_v1";
/// Where the agent pins each inner table of [`MAGLEV`], under its pin
/// directory (`<dir>/maglev_tables/<table id>`): an inner map can be read
/// back through the outer map only with `CAP_SYS_ADMIN`
/// (`BPF_MAP_GET_FD_BY_ID`), which the agent does not have.
pub const MAGLEV_TABLES_DIR: &str = "maglev_tables";
/// Connection table for packet hooks, assured flows (a TCP handshake
/// completed, a UDP stream): `Ct4Key -> Ct4Value` (LRU hash). `_v2`: the
/// value carries a state and timestamps in seconds (see [`crate::ct`]);
/// `_v3`: and a second endpoint for masqueraded flows (`Ct4Value::peer_*`).
pub const CT4: &str = "lb_ct4_v3";
/// Connection table for packet hooks, flows not assured yet: the same
/// layout; a flood of new flows can only displace entries of this table.
pub const CT4_NEW: &str = "lb_ct4_new_v3";
/// Reverse translation for socket hooks: `SockRevNat4Key -> SockRevNat4Value` (LRU hash).
pub const SOCK_REVNAT4: &str = "lb_sock_rnat4_v1";
/// Per-CPU counters indexed by [`crate::reason::Reason`] (per-CPU array of `u64`).
pub const STATS: &str = "lb_stats_v1";

/// Service ports, by the id frontends carry: `u32 -> ServiceInfo` (hash).
/// Written by the agent so that operators' commands can name what the
/// datapath holds from the maps alone.
pub const SERVICES: &str = "lb_svc_v1";
/// Per-CPU counters per service port: index `service_id` -> `ServiceCounters`
/// (per-CPU array).
pub const SERVICE_STATS: &str = "lb_svc_stats_v1";
/// `lb trace` only: the decisions of one traced packet (array of one
/// `TraceRecord`). Never pinned: each trace has its own.
pub const TRACE: &str = "lb_trace";
/// `lb trace` only: what the trace program needs besides the packet (array
/// of one `TraceRequest`). Never pinned.
pub const TRACE_REQUEST: &str = "lb_trace_req";

/// The per-cluster seed of the flow hash (`--hash-seed`): array of one
/// `u32`, written by the agent at start.
pub const HASH_SEED: &str = "lb_hash_seed_v1";

/// Every pinned map, for the agent's pin directory checks.
pub const ALL_MAPS: [&str; 24] = [
    FRONTENDS4,
    BACKENDS4,
    MAGLEV,
    CT4,
    CT4_NEW,
    SOCK_REVNAT4,
    STATS,
    SERVICES,
    SERVICE_STATS,
    crate::affinity::AFFINITY4,
    HASH_SEED,
    // snat
    crate::snat::SNAT_ADDR,
    crate::source_ranges::SOURCE_RANGES4,
    // sctp and service CIDRs
    crate::service_cidr::CLUSTER_IPS4,
    crate::service_cidr::SERVICE_CIDRS4,
    // selection
    crate::algorithm::BACKEND_CONNECTIONS,
    // snat, continued
    crate::snat::SNAT_LOCAL,
    // forwarding in XDP
    crate::forward::FORWARD_DEVICES,
    crate::forward::FORWARD_STATS,
    // icmp errors and fragments
    crate::frag::FRAGS4,
    // masquerade detector
    crate::masquerade_rules::MASQUERADE_RULES,
    // fast path
    crate::ct::generation::CT_GENERATION,
    // forwarding in XDP, to pods
    crate::forward::XDP_TARGETS,
    // selection: the wait for readers of a table rewritten in place
    crate::readers::READERS,
];

/// Map names whose layout this build understands are `..._v1`; a pinned
/// map with any other version suffix was written by another lb version.
pub const MAP_VERSION_SUFFIX: &str = "_v1";

/// Slots in the smallest Maglev table (up to 10 backends; larger Services
/// get larger tables: [`crate::maglev::table_size`]). Prime, as Maglev
/// requires. Each backend gets within one slot of an equal share, so with N
/// backends a share is off by less than N/1021 of it: under 1% up to 10.
pub const MAGLEV_TABLE_SIZE: u32 = crate::maglev::MIN_TABLE_SIZE;
/// Maglev tables the kernel can hold by default (the agent can raise it at
/// load time). A table belongs to one Service port: its frontends with the
/// same backend set share it.
pub const DEFAULT_MAX_TABLES: u32 = 2048;
pub const MAX_FRONTENDS: u32 = 65_536;
/// Backends the datapath holds by default (`--max-backends`, chosen at
/// load time): ids 1 to this, the backends hash holds this many and the
/// per-backend connection counts (an array indexed by id) one more.
pub const DEFAULT_MAX_BACKENDS: u32 = 1_048_576;
/// The largest `--max-backends` (the two maps then take about 1.3 GiB).
pub const MAX_BACKENDS_LIMIT: u32 = 16_777_216;
/// Entries of the assured connection table (`--ct-entries`): both
/// directions of 512Ki flows. The table of new flows gets a quarter.
pub const DEFAULT_CT_ENTRIES: u32 = 1_048_576;
/// The new-flow table's share of `--ct-entries`: one entry in this many.
pub const CT_NEW_SHARE: u32 = 4;
pub const DEFAULT_SOCK_REVNAT_ENTRIES: u32 = 65_536;
/// Service ports. Ids run from 1 to `MAX_SERVICES - 1` (smallest free
/// first): an id indexes `SERVICE_STATS`, which has `MAX_SERVICES` slots.
pub const MAX_SERVICES: u32 = 16_384;

/// IP protocol numbers as they appear in the IPv4 header.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;

/// Who sent the traffic a frontend entry applies to. Kubernetes treats the
/// two differently (externalTrafficPolicy vs internalTrafficPolicy), so each
/// frontend exists once per scope and may point at a different backend set.
pub const SCOPE_EXTERNAL: u8 = 0;
/// Traffic from the node itself or its pods, seen by the socket hooks.
pub const SCOPE_INTERNAL: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct Frontend4Key {
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    pub scope: u8,
}

/// With no backend, drop instead of reject: the policy is Local and this node
/// has no local endpoint (kube-proxy drops), as opposed to a Service with no
/// endpoints at all (kube-proxy rejects).
pub const FE_FLAG_EMPTY_DROP: u32 = 1 << 0;

/// Which frontend kind this is, for counters and `lb` output (bits 8..12).
pub const FE_KIND_SHIFT: u32 = 8;
pub const FE_KIND_MASK: u32 = 0xf << FE_KIND_SHIFT;
pub const FE_KIND_CLUSTER_IP: u32 = 1;
pub const FE_KIND_NODE_PORT: u32 = 2;
pub const FE_KIND_LOAD_BALANCER: u32 = 3;
pub const FE_KIND_EXTERNAL_IP: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FrontendValue {
    /// The Service port this frontend belongs to (agent-assigned).
    pub service_id: u32,
    /// Which Maglev table selects the backend; meaningless when
    /// `backend_count` is 0.
    pub table_id: u32,
    /// Backends in the table; 0 means reject or drop (see the flags).
    pub backend_count: u32,
    /// `FE_FLAG_*` and the `FE_KIND_*` field.
    pub flags: u32,
}

impl FrontendValue {
    #[inline(always)]
    pub const fn kind(&self) -> u32 {
        (self.flags & FE_KIND_MASK) >> FE_KIND_SHIFT
    }
}

/// The endpoint is terminating (chosen only as a fallback, see kube-proxy).
pub const BE_FLAG_TERMINATING: u8 = 1 << 0;
/// The endpoint lives on this node.
pub const BE_FLAG_LOCAL: u8 = 1 << 1;
/// The endpoint's EndpointSlice names another node (`nodeName`): its
/// replies to a masqueraded flow come back through an external device.
/// Neither flag: no node named (an endpoint outside the cluster, or a
/// slice written without nodeName).
pub const BE_FLAG_REMOTE: u8 = 1 << 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct Backend4 {
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    /// `BE_FLAG_*`.
    pub flags: u8,
}

/// The connection-table direction of an entry.
pub const CT_DIR_ORIGINAL: u8 = 0;
pub const CT_DIR_REPLY: u8 = 1;

/// A connection-table key: the tuple exactly as packets carry it.
/// Original entries are keyed by client -> frontend, reply entries by
/// backend -> client.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct Ct4Key {
    pub src_addr_be: u32,
    pub dst_addr_be: u32,
    pub src_port_be: u16,
    pub dst_port_be: u16,
    pub proto: u8,
    pub dir: u8,
    pub _pad: [u8; 2],
}

/// `Ct4Value.flags`: the flow is masqueraded (SNAT). Its original entry's
/// `peer_*` is the node address and port the source is rewritten to; its
/// reply entry is keyed backend -> that address and port, and its `peer_*`
/// is the client the destination is rewritten back to.
pub const CT_FLAG_SNAT: u8 = 1 << 0;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Ct4Value {
    /// Original entry: the backend to rewrite the destination to.
    /// Reply entry: the frontend to rewrite the source back to.
    pub nat_addr_be: u32,
    pub nat_port_be: u16,
    /// `crate::ct::CT_*`.
    pub state: u8,
    /// `CT_FLAG_*`.
    pub flags: u8,
    pub backend_id: u32,
    pub service_id: u32,
    /// Seconds of `CLOCK_MONOTONIC` (see [`crate::ct::seconds`]) when the
    /// flow was created and when this direction last saw a packet (written
    /// only when the second changes: no shared cache line written per packet).
    pub created_s: u32,
    pub last_seen_s: u32,
    /// With `CT_FLAG_SNAT` (0 otherwise): original entry, the source the
    /// flow is masqueraded to (node address, allocated port); reply entry,
    /// the client to rewrite the destination back to.
    pub peer_addr_be: u32,
    pub peer_port_be: u16,
    /// Original entry: the generation its last backend recheck passed at
    /// (`crate::ct::generation`; 0: none). Reply entry: 0.
    pub checked_gen: u16,
}

/// Socket-hook reverse translation: which frontend a socket meant when it
/// was connected (or sent) to a backend. Keyed by socket cookie, so
/// `getpeername()` and `recvmsg()` answer with the frontend address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct SockRevNat4Key {
    pub cookie: u64,
    pub backend_addr_be: u32,
    pub backend_port_be: u16,
    pub _pad: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct SockRevNat4Value {
    pub frontend_addr_be: u32,
    pub frontend_port_be: u16,
    pub _pad: u16,
    pub service_id: u32,
}

/// Fixed-size, NUL-padded names (Kubernetes limits: namespace and Service
/// names are DNS labels of at most 63 characters, port names at most 15).
pub const NAME_LEN: usize = 64;
pub const PORT_NAME_LEN: usize = 16;

/// externalTrafficPolicy is Local.
pub const SVC_FLAG_EXTERNAL_LOCAL: u8 = 1 << 0;
/// internalTrafficPolicy is Local.
pub const SVC_FLAG_INTERNAL_LOCAL: u8 = 1 << 1;
/// Topology-aware routing filtered the endpoints.
pub const SVC_FLAG_TOPOLOGY: u8 = 1 << 2;

/// How a service port picks a backend for a new flow (the others:
/// [`crate::algorithm`]).
pub const ALGORITHM_MAGLEV: u8 = 0;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct ServiceInfo {
    pub namespace: [u8; NAME_LEN],
    pub name: [u8; NAME_LEN],
    pub port_name: [u8; PORT_NAME_LEN],
    /// The Service port (not a frontend port: NodePorts differ).
    pub port_be: u16,
    pub proto: u8,
    /// `SVC_FLAG_*`.
    pub flags: u8,
    /// `ALGORITHM_*`.
    pub algorithm: u8,
    pub _pad: [u8; 3],
}

/// Per-service-port counters (per CPU; sum them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct ServiceCounters {
    /// New flows (packet hooks) and new sockets (socket hooks) translated.
    pub new_flows: u64,
    /// Packets of established flows translated by the connection table.
    pub established: u64,
    /// Rejected: the Service has no endpoint.
    pub rejected: u64,
    /// Dropped: no endpoint this traffic may use (policy Local).
    pub dropped: u64,
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all of these are repr(C), bytemuck Pod (no padding, any bit
    // pattern valid), which is exactly what aya::Pod requires.
    unsafe impl aya::Pod for Frontend4Key {}
    unsafe impl aya::Pod for FrontendValue {}
    unsafe impl aya::Pod for Backend4 {}
    unsafe impl aya::Pod for Ct4Key {}
    unsafe impl aya::Pod for Ct4Value {}
    unsafe impl aya::Pod for SockRevNat4Key {}
    unsafe impl aya::Pod for SockRevNat4Value {}
    unsafe impl aya::Pod for ServiceInfo {}
    unsafe impl aya::Pod for ServiceCounters {}
}

// The layouts are the contract: a size change must be a deliberate, versioned one.
const _: () = assert!(size_of::<Frontend4Key>() == 8);
const _: () = assert!(size_of::<FrontendValue>() == 16);
const _: () = assert!(size_of::<Backend4>() == 8);
const _: () = assert!(size_of::<Ct4Key>() == 16);
const _: () = assert!(size_of::<Ct4Value>() == 32);
const _: () = assert!(size_of::<SockRevNat4Key>() == 16);
const _: () = assert!(size_of::<SockRevNat4Value>() == 12);
const _: () = assert!(size_of::<ServiceInfo>() == 152);
const _: () = assert!(size_of::<ServiceCounters>() == 32);
