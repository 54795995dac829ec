//! One malloc arena for the agent's threads. glibc gives each thread that
//! allocates under contention an arena of its own (up to eight per core),
//! and memory freed in one arena serves only the threads of that arena:
//! in cluster mode the watchers decode every object on the runtime's
//! workers and free the decoded form, while the sync that follows
//! allocates the desired state and the plan elsewhere, so both peaks
//! added up. Measured at 10,000 Services x 10 endpoints in cluster mode
//! (the bench's cluster-mode section): peak RSS 185 MiB with glibc's
//! default, 170 with two arenas, 153 with one (one run each); eight
//! against one, interleaved twice: 184 and 179 MiB against 153 and 152,
//! full sync 3,427 and 3,301 ms against 3,156 and 3,031 (no slower).
//! Per-thread caches (tcache) still serve small allocations without the
//! arena's lock.

/// Limits glibc to one arena, unless `MALLOC_ARENA_MAX` says otherwise
/// (glibc's own setting, for an operator who wants its default back).
/// Call before the agent's threads exist: a thread keeps its arena.
pub fn limit() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
