//! A two-instruction XDP_PASS program loaded with plain bpf(2) calls: the
//! testbed gives it to the client's veth (a veth delivers XDP_TX frames
//! promptly only when its peer runs XDP itself, as a real NIC peer would),
//! and the bench measures the floor of a test run with it. [`attach_fd`]
//! attaches any XDP program inside a namespace (the bench's own DNAT).

use std::{
    fs,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    thread,
};

use anyhow::{Context, Result, bail};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_PASS: u8 = 2;

/// Loads `r0 = XDP_PASS; exit`; the program lives as long as the fd.
pub fn load() -> Result<OwnedFd> {
    // mov64 r0, XDP_PASS; exit
    let insns: [u8; 16] = [0xb7, 0, 0, 0, XDP_PASS, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
    let license = c"GPL";
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_XDP.to_ne_bytes());
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[68..72].copy_from_slice(&BPF_XDP.to_ne_bytes());
    bpf(BPF_PROG_LOAD, &mut attr).context("loading the XDP_PASS program")
}

/// Attaches the XDP_PASS program to `dev` inside the namespace at `netns`;
/// the link lives as long as the fd.
pub fn attach(netns: &Path, dev: &str) -> Result<OwnedFd> {
    let prog = load()?;
    attach_fd(netns, dev, prog.as_raw_fd())
}

/// Attaches the XDP program `prog_fd` to `dev` inside the namespace at
/// `netns` (a bpf link, which holds the program: the link lives as long
/// as the returned fd).
pub fn attach_fd(netns: &Path, dev: &str, prog_fd: i32) -> Result<OwnedFd> {
    // The interface index is looked up in the caller's namespace: do it
    // from a thread that enters the client's (setns affects only itself).
    let netns = fs::File::open(netns)?;
    let dev = std::ffi::CString::new(dev)?;
    thread::scope(|scope| {
        scope
            .spawn(|| -> Result<OwnedFd> {
                // SAFETY: plain syscalls on valid fds and a C string.
                if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns: {}", std::io::Error::last_os_error());
                }
                // SAFETY: as above.
                let ifindex = unsafe { libc::if_nametoindex(dev.as_ptr()) };
                if ifindex == 0 {
                    bail!("no device {dev:?}");
                }
                let mut attr = [0u8; 128];
                attr[0..4].copy_from_slice(&(prog_fd as u32).to_ne_bytes());
                attr[4..8].copy_from_slice(&ifindex.to_ne_bytes());
                attr[8..12].copy_from_slice(&BPF_XDP.to_ne_bytes());
                bpf(BPF_LINK_CREATE, &mut attr)
                    .with_context(|| format!("attaching XDP program {prog_fd} to {dev:?}"))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the attaching thread panicked"))?
    })
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> Result<OwnedFd> {
    // SAFETY: bpf(2) reads `attr` (zero-filled beyond the fields set).
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if fd < 0 {
        bail!("bpf({cmd}): {}", std::io::Error::last_os_error());
    }
    // SAFETY: a new fd the kernel just returned to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
