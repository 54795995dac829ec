//! Session affinity (`sessionAffinity: ClientIP`), shared by the packet
//! and socket hooks: a new connection from a client remembered for this
//! service port goes to the remembered backend while a connection last
//! chose it less than the timeout ago; otherwise the usual selection picks
//! and the choice is remembered. As kube-proxy's `-m recent` rules, only
//! new connections refresh the time (established flows never get here).

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::map, maps::LruHashMap};
use lb_common::{
    Affinity4Key, Affinity4Value, Backend4, DEFAULT_AFFINITY_ENTRIES, FrontendValue, reason::Reason,
};

use crate::{maps::BACKENDS4, trace};

/// (service port, endpoint set, client) -> backend and last use.
#[map(name = "lb_affinity4_v1")]
pub static AFFINITY4: LruHashMap<Affinity4Key, Affinity4Value> =
    LruHashMap::pinned(DEFAULT_AFFINITY_ENTRIES, 0);

const _: () = assert!(crate::maps::str_eq("lb_affinity4_v1", lb_common::AFFINITY4));

/// The backend for a new connection of `client` (`client_kind`: an
/// `AFFINITY_CLIENT_*`) to `fe`: the remembered one, else `pick()`'s,
/// remembered from now on. Without affinity on the frontend, `pick()`.
#[inline(always)]
pub fn select(
    fe: &FrontendValue,
    client_kind: u8,
    client: u64,
    pick: impl FnOnce() -> Result<(u32, Backend4), Reason>,
) -> Result<(u32, Backend4), Reason> {
    let timeout = fe.affinity_timeout_s();
    let key = Affinity4Key::new(fe, client_kind, client);
    let now = if timeout == 0 { 0 } else { now_s() };
    let kept = if timeout == 0 {
        None
    } else {
        remembered(&key, now, timeout)
    };
    // One call of `pick` (inlined once: the verifier walks the selection
    // once, not once per affinity case).
    let (id, backend) = match kept {
        Some(kept) => kept,
        None => pick()?,
    };
    if timeout != 0 {
        trace::affinity_set();
        remember(&key, id, now);
    }
    Ok((id, backend))
}

/// `--rcheck --seconds timeout`: remembered less than `timeout` seconds
/// ago, and the backend still exists (the agent purges the entries of
/// endpoints that leave the Service).
#[inline(always)]
fn remembered(key: &Affinity4Key, now: u32, timeout: u32) -> Option<(u32, Backend4)> {
    // SAFETY: copied out at once.
    let entry = unsafe { AFFINITY4.get(key).copied() }?;
    if now.wrapping_sub(entry.last_used_s) >= timeout {
        return None;
    }
    // SAFETY: copied out at once.
    let backend = unsafe { BACKENDS4.get(&entry.backend_id).copied() }?;
    trace::affinity_hit(entry.backend_id);
    Some((entry.backend_id, backend))
}

/// `--set`: remember (or refresh) the choice; a trace changes nothing.
#[inline(always)]
fn remember(key: &Affinity4Key, backend_id: u32, now: u32) {
    if trace::dry_run() {
        return;
    }
    let value = Affinity4Value {
        backend_id,
        last_used_s: now,
    };
    // On failure (memory pressure) the next connection selects afresh.
    let _ = AFFINITY4.insert(key, &value, 0);
}

/// Whole seconds of the monotonic clock (`bpf_ktime_get_ns`), as stored.
#[inline(always)]
fn now_s() -> u32 {
    // SAFETY: a plain helper call.
    (unsafe { bpf_ktime_get_ns() } / 1_000_000_000) as u32
}
