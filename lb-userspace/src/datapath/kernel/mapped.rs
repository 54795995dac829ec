//! Filling an array map through a mapping of its memory
//! (`BPF_F_MMAPABLE`): a Maglev table's slots are plain stores, where a
//! batch update copies and checks each element in the kernel (at a full
//! sync of 10,000 Services that was about 40% of the time).

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::MapData;

/// `BPF_F_MMAPABLE`: the array's values may be mapped into userspace.
pub(super) const BPF_F_MMAPABLE: u32 = 1 << 10;

/// The kernel lays an array's values out 8 bytes apart (a value's size
/// rounded up to 8).
const ELEMENT_STRIDE: usize = 8;

/// A shared, writable mapping of the first `len` bytes (whole pages) of
/// the mmapable array `map`'s values; the caller unmaps it.
pub(super) fn map_values(
    map: &MapData,
    len: usize,
) -> std::io::Result<std::ptr::NonNull<libc::c_void>> {
    map_values_at(map, len, std::ptr::null_mut(), 0)
}

/// [`map_values`] at `at` when `flags` has `MAP_FIXED`.
fn map_values_at(
    map: &MapData,
    len: usize,
    at: *mut libc::c_void,
    flags: libc::c_int,
) -> std::io::Result<std::ptr::NonNull<libc::c_void>> {
    // SAFETY: a shared mapping of the map's fd, of the pages holding its
    // values (the kernel checks the length against the map's size); at a
    // fixed address only over a stretch the caller reserved.
    let base = unsafe {
        libc::mmap(
            at,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | flags,
            map.fd().as_fd().as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    std::ptr::NonNull::new(base).ok_or_else(|| std::io::Error::other("mmap returned null"))
}

/// The address space fresh tables are filled through, a stretch
/// reserved once and unmapped at once. Each unmapping flushes the TLB of
/// every CPU that runs a thread of the process (an IPI each, which on a
/// VM exits to the host), so tables mapped and unmapped one by one while
/// another thread runs cost that flush each: a table's mapping, stores
/// and unmapping took 16 to 20 us where they take 3 with the unmappings
/// gathered. A table is mapped over the next free stretch of the window
/// (`MAP_FIXED`, never outside it); a full window is reserved again in
/// one call, which unmaps every table in it together.
pub(super) struct FillWindow {
    base: std::ptr::NonNull<libc::c_void>,
    used: usize,
    /// Where a fixed mapping failed: a kernel older than 6.12 may have
    /// unmapped the reservation there, and something else may be mapped
    /// there now, so the window is never written nor unmapped there again
    /// (it refuses every write after that).
    hole: Option<std::ops::Range<usize>>,
}

/// The window's size: its tables' pages count in the agent's resident
/// memory while they are mapped, so it stays small (256 tables of 1,021
/// slots).
const WINDOW_BYTES: usize = 2 << 20;

/// The largest table (its size first, then its slots) fits the window.
const WINDOW_HOLDS_THE_LARGEST_TABLE: () =
    assert!((lb_common::maglev::MAX_TABLE_SIZE as usize + 1) * ELEMENT_STRIDE <= WINDOW_BYTES);

impl FillWindow {
    pub(super) fn reserve() -> std::io::Result<FillWindow> {
        let () = WINDOW_HOLDS_THE_LARGEST_TABLE;
        let base = reserve_at(std::ptr::null_mut())?;
        Ok(FillWindow {
            base,
            used: 0,
            hole: None,
        })
    }

    /// Writes `parts`, one after the other, from index 0 on into the
    /// mmapable `u32` array `map` (created with at least as many entries).
    pub(super) fn write_u32s(&mut self, map: &MapData, parts: &[&[u32]]) -> std::io::Result<()> {
        if self.hole.is_some() {
            return Err(std::io::Error::other(
                "an earlier table's mapping failed in this window",
            ));
        }
        let count: usize = parts.iter().map(|part| part.len()).sum();
        let len = mapping_len(count);
        if len > WINDOW_BYTES {
            // Never: the largest table is about a quarter of the window
            // (`WINDOW_HOLDS_THE_LARGEST_TABLE`).
            return Err(std::io::Error::other(format!(
                "{len} bytes do not fit the {WINDOW_BYTES}-byte window tables are filled through"
            )));
        }
        if self.used + len > WINDOW_BYTES {
            // Every table in the window unmapped in one call, the stretch
            // reserved again.
            if let Err(err) = reserve_at(self.base.as_ptr()) {
                self.hole = Some(0..WINDOW_BYTES);
                return Err(err);
            }
            self.used = 0;
        }
        // SAFETY: inside the window (`used + len <= WINDOW_BYTES`).
        let at = unsafe { self.base.as_ptr().cast::<u8>().add(self.used) };
        let base = match map_values_at(map, len, at.cast(), libc::MAP_FIXED) {
            Ok(base) => base,
            Err(err) => {
                self.hole = Some(self.used..self.used + len);
                return Err(err);
            }
        };
        store_u32s(base.as_ptr().cast(), parts);
        self.used += len;
        Ok(())
    }
}

impl Drop for FillWindow {
    fn drop(&mut self) {
        let hole = self.hole.clone().unwrap_or(WINDOW_BYTES..WINDOW_BYTES);
        for ours in [0..hole.start, hole.end..WINDOW_BYTES] {
            if !ours.is_empty() {
                // SAFETY: inside the window.
                let at = unsafe { self.base.as_ptr().cast::<u8>().add(ours.start) };
                // Nothing to do if this fails: the stretch stays reserved.
                let _ = unmap(at.cast(), ours.len());
            }
        }
    }
}

/// Reserves the window's stretch at `at` (`MAP_FIXED`: replacing what is
/// mapped there, the window's own tables), or anywhere when null.
fn reserve_at(at: *mut libc::c_void) -> std::io::Result<std::ptr::NonNull<libc::c_void>> {
    let fixed = if at.is_null() { 0 } else { libc::MAP_FIXED };
    // SAFETY: an anonymous, inaccessible mapping: at a fixed address only
    // over the window's own stretch.
    let base = unsafe {
        libc::mmap(
            at,
            WINDOW_BYTES,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | fixed,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    std::ptr::NonNull::new(base).ok_or_else(|| std::io::Error::other("mmap returned null"))
}

/// The whole pages holding `count` values.
fn mapping_len(count: usize) -> usize {
    // SAFETY: a plain query.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    (count * ELEMENT_STRIDE).next_multiple_of(page).max(page)
}

/// Stores `parts`, one after the other, as the array's values at `base`.
fn store_u32s(base: *mut u8, parts: &[&[u32]]) {
    for (index, value) in parts.iter().flat_map(|part| part.iter()).enumerate() {
        // SAFETY: inside the mapping of at least `mapping_len(count)` bytes:
        // `index * 8 + 4 <= len`.
        unsafe {
            base.add(index * ELEMENT_STRIDE)
                .cast::<u32>()
                .write_unaligned(*value);
        }
    }
}

fn unmap(base: *mut libc::c_void, len: usize) -> std::io::Result<()> {
    // SAFETY: a mapping this module made, of `len` bytes, unmapped once.
    if unsafe { libc::munmap(base, len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads the `entries` values of the mmapable `u32` array `map`, asks
/// `changes` which to store (`(index, value)`; none: leave the map as it
/// is), and stores each one as a single aligned 4-byte store, so a
/// program reading meanwhile sees its old value or its new one; whether
/// it stored.
pub(super) fn rewrite_u32s(
    map: &MapData,
    entries: usize,
    changes: impl FnOnce(&[u32]) -> Option<Vec<(usize, u32)>>,
) -> std::io::Result<bool> {
    use std::sync::atomic::{AtomicU32, Ordering};
    let len = mapping_len(entries);
    let base = map_values(map, len)?.as_ptr().cast::<u8>();
    // SAFETY: every index below `entries` lies inside the mapping
    // (`index * 8 + 4 <= len`), 8-byte aligned (the mapping is
    // page-aligned); the kernel's programs access the same values only
    // atomically per value.
    let slot = |index: usize| unsafe { &*base.add(index * ELEMENT_STRIDE).cast::<AtomicU32>() };
    let current: Vec<u32> = (0..entries)
        .map(|i| slot(i).load(Ordering::Relaxed))
        .collect();
    let stores = changes(&current);
    let stored = stores.is_some();
    for (index, value) in stores.unwrap_or_default() {
        if index < entries {
            slot(index).store(value, Ordering::Release);
        }
    }
    unmap(base.cast(), len)?;
    Ok(stored)
}
