//! Every map of the datapath, pinned by name under the agent's pin
//! directory. Names, keys and values come from `lb-common` (the contract);
//! the `name = "..."` literals below must equal lb-common's constants, which
//! the assertions at the end check at compile time.

use aya_ebpf::{
    btf_maps::{self, ArrayOfMaps},
    macros::{btf_map, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use lb_common::frag::{Frag4Key, Frag4Ports};
use lb_common::reject::RejectBucket;
use lb_common::{
    Backend4, CT_NEW_SHARE, Ct4Key, Ct4Value, DEFAULT_CT_ENTRIES, DEFAULT_MAX_BACKENDS,
    DEFAULT_MAX_TABLES, DEFAULT_SOCK_REVNAT_ENTRIES, Frontend4Key, FrontendValue,
    MAGLEV_TABLE_SIZE, MAX_FRONTENDS, SockRevNat4Key, SockRevNat4Value, reason::REASON_COUNT,
};
use lb_common::{MAX_SERVICES, ServiceCounters, ServiceInfo, TraceRecord, TraceRequest};

/// `Frontend4Key -> FrontendValue`.
#[map(name = "lb_fe4_v1")]
pub static FRONTENDS4: HashMap<Frontend4Key, FrontendValue> = HashMap::pinned(MAX_FRONTENDS, 0);

/// Backend id -> `Backend4`.
#[map(name = "lb_be4_v1")]
pub static BACKENDS4: HashMap<u32, Backend4> = HashMap::pinned(DEFAULT_MAX_BACKENDS, 0);

/// `BPF_F_INNER_MAP`: inner arrays of any size may stand in for the
/// template (kernel 5.10); the verifier then checks indexes at run time.
const BPF_F_INNER_MAP: usize = 1 << 12;

/// `BPF_F_MMAPABLE`: the agent fills a table through a mapping of it.
const BPF_F_MMAPABLE: usize = 1 << 10;

/// One Maglev table as the outer map holds it.
pub type MaglevTable =
    btf_maps::Array<u32, { MAGLEV_TABLE_SIZE as usize + 1 }, { BPF_F_INNER_MAP | BPF_F_MMAPABLE }>;

/// Maglev tables: table id -> its inner array (slot 0: the size, then the
/// backend ids; see `lb_common::maglev`). The agent resizes the outer map
/// at load time (`--max-tables`) and swaps a whole table in one update.
#[btf_map(name = "lb_maglev_v2", pin_by_name)]
pub static MAGLEV: ArrayOfMaps<MaglevTable, { DEFAULT_MAX_TABLES as usize }> = ArrayOfMaps::new();

/// Connection table of the packet hooks, assured flows (both directions).
/// The agent resizes it at load time (`--ct-entries`).
#[map(name = "lb_ct4_v3")]
pub static CT4: LruHashMap<Ct4Key, Ct4Value> = LruHashMap::pinned(DEFAULT_CT_ENTRIES, 0);

/// Connection table of the packet hooks, flows not assured yet (a quarter
/// of `--ct-entries`).
#[map(name = "lb_ct4_new_v3")]
pub static CT4_NEW: LruHashMap<Ct4Key, Ct4Value> =
    LruHashMap::pinned(DEFAULT_CT_ENTRIES / CT_NEW_SHARE, 0);

/// Reverse translation of the socket hooks.
#[map(name = "lb_sock_rnat4_v1")]
pub static SOCK_REVNAT4: LruHashMap<SockRevNat4Key, SockRevNat4Value> =
    LruHashMap::pinned(DEFAULT_SOCK_REVNAT_ENTRIES, 0);

/// Per-CPU counters indexed by `lb_common::reason::Reason`.
#[map(name = "lb_stats_v1")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::pinned(REASON_COUNT, 0);

/// Service id -> names and policies (read by operators' commands; the
/// datapath itself never reads it).
#[map(name = "lb_svc_v1")]
pub static SERVICES: HashMap<u32, ServiceInfo> = HashMap::pinned(MAX_SERVICES, 0);

/// Per-CPU counters per service id.
#[map(name = "lb_svc_stats_v1")]
pub static SERVICE_STATS: PerCpuArray<ServiceCounters> = PerCpuArray::pinned(MAX_SERVICES, 0);

/// The per-cluster seed of the flow hash (`--hash-seed`), slot 0.
#[map(name = "lb_hash_seed_v1")]
pub static HASH_SEED: Array<u32> = Array::pinned(1, 0);

/// The node's address new external connections are masqueraded to
/// (`lb_common::snat::SNAT_ADDR`), slot 0; 0: none known.
#[map(name = "lb_snat_addr_v1")]
pub static SNAT_ADDR: Array<u32> = Array::pinned(1, 0);

/// 1: backends on this node are masqueraded too (the pod hook is
/// attached, `lb_common::snat::SNAT_LOCAL`), slot 0.
#[map(name = "lb_snat_local_v1")]
pub static SNAT_LOCAL: Array<u32> = Array::pinned(1, 0);

/// The per-CPU token bucket of ICMP rejects (never pinned: a restart
/// starts with a full burst).
#[map(name = "lb_reject_tokens")]
pub static REJECT_TOKENS: PerCpuArray<RejectBucket> = PerCpuArray::with_max_entries(1, 0);

/// Ports of fragmented datagrams, by their first fragment
/// (`lb_common::frag`). The agent resizes it at load time
/// (`--frag-entries`).
#[map(name = "lb_frag4_v1")]
pub static FRAGS4: LruHashMap<Frag4Key, Frag4Ports> =
    LruHashMap::pinned(lb_common::frag::DEFAULT_FRAG_ENTRIES, 0);

/// `lb trace` only (never pinned: private to each trace).
#[map(name = "lb_trace")]
pub static TRACE: Array<TraceRecord> = Array::with_max_entries(1, 0);

/// `lb trace` only (never pinned: private to each trace).
#[map(name = "lb_trace_req")]
pub static TRACE_REQUEST: Array<TraceRequest> = Array::with_max_entries(1, 0);

pub(crate) const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

// The `#[map(name = ...)]` attribute takes a literal; keep it in step with
// the contract.
const _: () = assert!(str_eq("lb_fe4_v1", lb_common::FRONTENDS4));
const _: () = assert!(str_eq("lb_be4_v1", lb_common::BACKENDS4));
const _: () = assert!(str_eq("lb_maglev_v2", lb_common::MAGLEV));
const _: () = assert!(str_eq("lb_ct4_v3", lb_common::CT4));
const _: () = assert!(str_eq("lb_ct4_new_v3", lb_common::CT4_NEW));
const _: () = assert!(str_eq("lb_sock_rnat4_v1", lb_common::SOCK_REVNAT4));
const _: () = assert!(str_eq("lb_stats_v1", lb_common::STATS));
const _: () = assert!(str_eq("lb_svc_v1", lb_common::SERVICES));
const _: () = assert!(str_eq("lb_svc_stats_v1", lb_common::SERVICE_STATS));
const _: () = assert!(str_eq("lb_trace", lb_common::TRACE));
const _: () = assert!(str_eq("lb_hash_seed_v1", lb_common::HASH_SEED));
const _: () = assert!(str_eq("lb_reject_tokens", lb_common::reject::REJECT_TOKENS));
const _: () = assert!(str_eq("lb_trace_req", lb_common::TRACE_REQUEST));
const _: () = assert!(str_eq("lb_snat_addr_v1", lb_common::snat::SNAT_ADDR));
const _: () = assert!(str_eq("lb_snat_local_v1", lb_common::snat::SNAT_LOCAL));
const _: () = assert!(str_eq("lb_frag4_v1", lb_common::frag::FRAGS4));
