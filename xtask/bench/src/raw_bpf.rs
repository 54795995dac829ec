//! The bench's own programs by plain bpf(2): `BPF_PROG_LOAD` of raw
//! instructions (with the verifier's log when it refuses) and
//! `BPF_PROG_TEST_RUN` on a file descriptor, timed by the kernel exactly as
//! the agent's programs are.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use anyhow::{Result, bail};
use lb::datapath::TestRunOutcome;

use crate::bpf_asm::{Insn, encode};

const BPF_PROG_LOAD: libc::c_long = 5;
pub const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
/// Room the program may grow the frame by (as `LiveProgram` leaves).
const HEADROOM: usize = 256;

/// Where a program runs: its type (and, for XDP, attach type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    /// A tc classifier (what lb's egress program is).
    Tc,
}

/// A program held by its file descriptor (unloaded on drop).
pub struct RawProgram {
    fd: OwnedFd,
}

impl RawProgram {
    /// A program someone else loaded (e.g. `xtask::xdp_pass::load()`).
    pub fn from_fd(fd: OwnedFd) -> RawProgram {
        RawProgram { fd }
    }

    /// Loads `insns` as a `hook` program named `name` (at most 15 bytes).
    pub fn load(hook: Hook, name: &str, insns: &[Insn]) -> Result<RawProgram> {
        let (prog_type, attach_type) = match hook {
            Hook::Xdp => (BPF_PROG_TYPE_XDP, BPF_XDP),
            Hook::Tc => (BPF_PROG_TYPE_SCHED_CLS, 0),
        };
        let code = encode(insns);
        let license = c"GPL";
        let mut log = vec![0u8; 64 * 1024];
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&prog_type.to_ne_bytes());
        attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
        attr[8..16].copy_from_slice(&(code.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        attr[24..28].copy_from_slice(&1u32.to_ne_bytes()); // log_level
        attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
        attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
        let name = name.as_bytes();
        let n = name.len().min(15);
        attr[48..48 + n].copy_from_slice(&name[..n]);
        attr[68..72].copy_from_slice(&attach_type.to_ne_bytes());
        let fd = syscall(BPF_PROG_LOAD, &mut attr).map_err(|err| {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            anyhow::anyhow!(
                "the kernel refused the program ({err}); verifier log:\n{}",
                String::from_utf8_lossy(&log[..end])
            )
        })?;
        // SAFETY: a new fd the kernel just returned to us.
        Ok(RawProgram {
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
    }

    /// The program's descriptor, for commands this module does not wrap.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Runs the program once on `frame` (`BPF_PROG_TEST_RUN`, repeat 1).
    pub fn test_run(&self, frame: &[u8]) -> Result<TestRunOutcome> {
        let mut out = vec![0u8; frame.len() + HEADROOM];
        let mut attr = [0u8; 80];
        attr[0..4].copy_from_slice(&(self.fd.as_raw_fd() as u32).to_ne_bytes());
        attr[8..12].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        attr[12..16].copy_from_slice(&(out.len() as u32).to_ne_bytes());
        attr[16..24].copy_from_slice(&(frame.as_ptr() as u64).to_ne_bytes());
        attr[24..32].copy_from_slice(&(out.as_mut_ptr() as u64).to_ne_bytes());
        attr[32..36].copy_from_slice(&1u32.to_ne_bytes()); // repeat
        // `out` has room for data_size_out bytes, as the kernel requires.
        syscall(BPF_PROG_TEST_RUN, &mut attr)?;
        let field = |at: usize| u32::from_ne_bytes(attr[at..at + 4].try_into().unwrap());
        out.truncate(field(12) as usize);
        Ok(TestRunOutcome {
            return_value: field(4),
            packet_out: out,
            duration: Duration::from_nanos(field(36).into()),
        })
    }
}

/// bpf(2): `cmd` with `attr` (zero beyond the fields the caller set; every
/// pointer in it valid, for the sizes it gives, until the call returns).
pub fn syscall(cmd: libc::c_long, attr: &mut [u8]) -> Result<libc::c_long> {
    // SAFETY: bpf(2) reads and writes `attr` within its length and the
    // buffers it points at, which the caller keeps alive over the call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if ret < 0 {
        bail!("bpf({cmd}): {}", std::io::Error::last_os_error());
    }
    Ok(ret)
}
