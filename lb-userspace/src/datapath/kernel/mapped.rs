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
    // SAFETY: a shared mapping of the map's fd, of the pages holding its
    // values (the kernel checks the length against the map's size).
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            map.fd().as_fd().as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    std::ptr::NonNull::new(base).ok_or_else(|| std::io::Error::other("mmap returned null"))
}

/// Writes `values` from index 0 on into the mmapable `u32` array `map`
/// (created with at least as many entries).
pub(super) fn write_u32s(map: &MapData, values: &[u32]) -> std::io::Result<()> {
    // SAFETY: a plain query.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let len = (values.len() * ELEMENT_STRIDE).next_multiple_of(page);
    let base = map_values(map, len)?.as_ptr();
    for (index, value) in values.iter().enumerate() {
        // SAFETY: inside the mapping: `index * 8 + 4 <= len`.
        unsafe {
            base.cast::<u8>()
                .add(index * ELEMENT_STRIDE)
                .cast::<u32>()
                .write_unaligned(*value);
        }
    }
    // SAFETY: the mapping made above, unmapped once.
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
    // SAFETY: a plain query.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let len = (entries * ELEMENT_STRIDE).next_multiple_of(page).max(page);
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
    // SAFETY: the mapping made above, unmapped once.
    if unsafe { libc::munmap(base.cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stored)
}
