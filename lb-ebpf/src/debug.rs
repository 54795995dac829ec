//! Debug logging through aya-log, off unless the agent runs with
//! `--bpf-log`. `DEBUG` is a load-time constant in `.rodata`: in normal
//! mode the verifier knows it is 0 and removes every log call, so the hot
//! path never pays for logging.

/// 1: log each verdict (set by the loader, `EbpfLoader::override_global`).
#[unsafe(no_mangle)]
static DEBUG: u8 = 0;

#[inline(always)]
pub fn enabled() -> bool {
    // SAFETY: a plain read of our own static; volatile so the compiler
    // keeps the load the loader's value lands in.
    unsafe { core::ptr::read_volatile(&raw const DEBUG) != 0 }
}
