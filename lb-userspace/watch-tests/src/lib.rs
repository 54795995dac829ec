//! Watch tests of cluster mode live in `tests/`; they need root. This
//! library holds what they share: the agent under test (the real `lb`
//! binary) and the objects they create through the API.
pub mod agent;
pub mod objects;

use std::time::Duration;

use anyhow::{Result, bail};

/// Polls `check` every 100 ms until it answers `Some`, for at most
/// `within`; the error names `what` was awaited and the last state seen.
pub async fn wait_for<T, S: std::fmt::Debug>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Result<Result<T, S>>,
) -> Result<T> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let last = match check()? {
            Ok(done) => return Ok(done),
            Err(state) => state,
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("{what}: not within {within:?}; last seen: {last:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Only one test at a time: each runs an API server, etcd and an agent on
/// two shared cores, and the sync counts and waits should not compete.
pub static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn assert_root() {
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "watch tests need root (the agent pins BPF maps)"
    );
}

pub use xtask::scrape::http_get;
