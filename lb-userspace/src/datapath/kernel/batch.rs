//! Reading and writing a run of an array map in one `BPF_MAP_LOOKUP_BATCH`
//! or `BPF_MAP_UPDATE_BATCH` call (kernel 5.6+; aya has no wrapper). A
//! Maglev table is 1,021 slots: slot by slot that is 1,021 syscalls, which
//! the periodic resync would pay for every live table, and a full sync for
//! every table it writes (10 million syscalls at 10,000 Services).

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
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if ret < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            // The end of the array came first: what was read is in `count`.
            Some(libc::ENOENT) => whole(keys, values, attr.count, first, count),
            Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS) => Ok(None),
            _ => Err(err),
        };
    }
    whole(keys, values, attr.count, first, count)
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

/// Writes `values` into the array map from index `first` on; `false` when
/// the kernel has no batch update for it (the caller writes one by one),
/// an error when the write itself failed (then a prefix may be written,
/// as slot by slot).
pub(super) fn write_u32s(map: &MapData, first: u32, values: &[u32]) -> std::io::Result<bool> {
    let keys: Vec<u32> = (first..).take(values.len()).collect();
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: values.len() as u32,
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: the attribute names `count` keys and values of the map's
    // sizes (u32 each, which aya checked at open), which the kernel only
    // reads; both outlive the call.
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
            // The kernel has no batch update here: slot by slot instead
            // (rewriting what may be written already: nothing references
            // a table being written).
            Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS | ENOTSUPP) => Ok(false),
            _ => Err(err),
        };
    }
    if attr.count as usize != values.len() {
        return Err(std::io::Error::other(format!(
            "batch update wrote {} of {} entries from {first}",
            attr.count,
            values.len()
        )));
    }
    Ok(true)
}
