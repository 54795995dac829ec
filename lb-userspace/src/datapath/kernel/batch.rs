//! Reading and writing a run of an array map in one `BPF_MAP_LOOKUP_BATCH`
//! or `BPF_MAP_UPDATE_BATCH` call (kernel 5.6+; aya has no wrapper). A
//! Maglev table is 1,021 slots or more: slot by slot that is a syscall
//! each, which the periodic resync would pay for every live table it
//! reads. (Tables are written through a mapping: `mapped`.) A full sync's
//! frontends, backends and services go into their hash maps the same way.

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::MapData;

/// The command numbers of `BPF_MAP_LOOKUP_BATCH` and
/// `BPF_MAP_UPDATE_BATCH` in `bpf(2)`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// The kernel's internal "not supported" errno, which `bpf(2)` returns for
/// a map type without a batch operation.
const ENOTSUPP: i32 = 524;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The `count` u32 values of the array map from index `first` on; `None`
/// when the kernel has no batch lookup for it (the caller reads one by
/// one), an error when the read itself failed.
pub(super) fn read_u32s(
    map: &MapData,
    first: u32,
    count: u32,
) -> std::io::Result<Option<Vec<u32>>> {
    let mut keys = vec![0u32; count as usize];
    let mut values = vec![0u32; count as usize];
    // The batch starts after `in_batch`; none: at the first index.
    let previous = first.wrapping_sub(1);
    let mut next = 0u32;
    let mut attr = BatchAttr {
        in_batch: if first == 0 {
            0
        } else {
            &previous as *const u32 as u64
        },
        out_batch: &mut next as *mut u32 as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count,
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: the attribute names buffers of `count` keys and values of
    // the map's sizes (u32 each, which aya checked at open), and `in_batch`
    // and `out_batch` one key each; all outlive the call.
    if let Err(err) = unsafe { lookup_batch(&mut attr) } {
        return match err.raw_os_error() {
            // The end of the array came first: what was read is in `count`.
            Some(libc::ENOENT) => whole(keys, values, attr.count, first, count),
            Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS) => Ok(None),
            _ => Err(err),
        };
    }
    whole(keys, values, attr.count, first, count)
}

/// Every entry of a hash map, `chunk` per `BPF_MAP_LOOKUP_BATCH` call;
/// `None` when the kernel has no batch lookup for it (the caller walks it
/// key by key). Entries that change under the read may be missed or seen
/// twice, as with any walk of a live hash map.
pub(super) fn read_hash<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    chunk: u32,
) -> std::io::Result<Option<Vec<(K, V)>>> {
    let mut out = Vec::new();
    let read = for_each_batch::<K, V>(map, chunk, |keys, values| {
        out.extend(keys.iter().copied().zip(values.iter().copied()))
    })?;
    Ok(read.map(|()| out))
}

/// How many entries a hash map holds, read as [`read_hash`] reads them but
/// through one reused buffer (no copy of the whole map).
pub(super) fn count_hash<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    chunk: u32,
) -> std::io::Result<Option<u64>> {
    let mut count = 0u64;
    let read = for_each_batch::<K, V>(map, chunk, |keys, _| count += keys.len() as u64)?;
    Ok(read.map(|()| count))
}

/// Calls `f` with each batch of a hash map's entries, in one pair of
/// buffers of `chunk` entries; `None` when the kernel has no batch lookup.
fn for_each_batch<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    chunk: u32,
    mut f: impl FnMut(&[K], &[V]),
) -> std::io::Result<Option<()>> {
    // SAFETY: aya::Pod types are plain data, valid for any bit pattern.
    let mut keys: Vec<K> = (0..chunk).map(|_| unsafe { std::mem::zeroed() }).collect();
    // SAFETY: as above.
    let mut values: Vec<V> = (0..chunk).map(|_| unsafe { std::mem::zeroed() }).collect();
    // Hash maps' batch tokens are bucket indexes (u32).
    let mut token_in = 0u32;
    let mut token_out = 0u32;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &token_in as *const u32 as u64
            },
            out_batch: &mut token_out as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk,
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the attribute names buffers of `chunk` keys and values of
        // the map's sizes (aya checked them at open), and the two tokens;
        // all outlive the call.
        let done = if let Err(err) = unsafe { lookup_batch(&mut attr) } {
            match err.raw_os_error() {
                Some(libc::ENOENT) => true,
                Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS) if first => return Ok(None),
                _ => return Err(err),
            }
        } else {
            false
        };
        let n = (attr.count as usize).min(keys.len());
        f(&keys[..n], &values[..n]);
        if done {
            return Ok(Some(()));
        }
        token_in = token_out;
        first = false;
    }
}

/// One `BPF_MAP_LOOKUP_BATCH` call.
///
/// # Safety
/// `attr` must name buffers of `count` keys and values of the map's sizes,
/// and valid batch tokens, all outliving the call.
unsafe fn lookup_batch(attr: &mut BatchAttr) -> std::io::Result<()> {
    // SAFETY: the caller's promise.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The values, if the kernel returned exactly the keys asked for.
fn whole(
    keys: Vec<u32>,
    values: Vec<u32>,
    returned: u32,
    first: u32,
    count: u32,
) -> std::io::Result<Option<Vec<u32>>> {
    let expected = (first..first + count).collect::<Vec<_>>();
    if returned != count || keys != expected {
        return Err(std::io::Error::other(format!(
            "batch lookup returned {returned} of {count} entries from {first}"
        )));
    }
    Ok(Some(values))
}

/// Writes `values` into the array map from index `first` on, for any
/// value type `V` (the map's own, which aya checked at open); `false` when
/// the kernel has no batch update for it (the caller writes one by one),
/// an error when the write itself failed (then a prefix may be written,
/// as slot by slot).
pub(super) fn write_values<V: aya::Pod>(
    map: &MapData,
    first: u32,
    values: &[V],
) -> std::io::Result<bool> {
    let keys: Vec<u32> = (first..).take(values.len()).collect();
    write_keyed(map.fd().as_fd(), &keys, values)
}

/// Writes `values[i]` at `keys[i]` of the map behind `map_fd` in one
/// `BPF_MAP_UPDATE_BATCH` (an array of maps takes map fds as values);
/// `false` and errors as [`write_values`].
pub(super) fn write_keyed<V: Copy>(
    map_fd: std::os::fd::BorrowedFd<'_>,
    keys: &[u32],
    values: &[V],
) -> std::io::Result<bool> {
    write_pairs(map_fd, keys, values)
}

/// Writes each `(key, value)` of `pairs` into the hash map `map` in one
/// `BPF_MAP_UPDATE_BATCH` per [`PAIRS_PER_BATCH`] (the kernel inserts them
/// one by one, as single updates would, without a syscall each); `false`
/// and errors as [`write_values`]. `K` and `V` are the map's own types
/// (aya checked their sizes at open).
pub(super) fn write_hash_pairs<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    pairs: &[(K, V)],
) -> std::io::Result<bool> {
    for chunk in pairs.chunks(PAIRS_PER_BATCH) {
        let keys: Vec<K> = chunk.iter().map(|(k, _)| *k).collect();
        let values: Vec<V> = chunk.iter().map(|(_, v)| *v).collect();
        if !write_pairs(map.fd().as_fd(), &keys, &values)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Pairs per batch update: bounds the copies made for one call.
const PAIRS_PER_BATCH: usize = 4096;

fn write_pairs<K: Copy, V: Copy>(
    map_fd: std::os::fd::BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> std::io::Result<bool> {
    assert_eq!(keys.len(), values.len());
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: values.len() as u32,
        map_fd: map_fd.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: the attribute names `count` keys and values of the map's
    // sizes (`K` keys and `V` values, the map's own as the callers say),
    // which the kernel only reads; both outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if ret < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            // The kernel has no batch update here: one by one instead
            // (rewriting what may be written already is harmless).
            Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS | ENOTSUPP) => Ok(false),
            _ => Err(err),
        };
    }
    if attr.count as usize != values.len() {
        return Err(std::io::Error::other(format!(
            "batch update wrote {} of {} entries",
            attr.count,
            values.len()
        )));
    }
    Ok(true)
}
