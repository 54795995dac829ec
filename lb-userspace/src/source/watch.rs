//! Watching a directory for changes (inotify through `notify`).

use std::{path::Path, time::Duration};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Editors and `kubectl`-style tools write in bursts: one wake-up per burst.
const SETTLE: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path} for changes: {source}; check that the directory exists")]
pub struct WatchError {
    path: String,
    #[source]
    source: notify::Error,
}

/// Tells when anything in one directory (not its subdirectories) changed.
pub struct DirWatcher {
    // Dropping the watcher ends the watch: it lives as long as we do.
    _watcher: RecommendedWatcher,
    events: mpsc::UnboundedReceiver<()>,
}

impl DirWatcher {
    pub fn new(dir: &Path) -> Result<DirWatcher, WatchError> {
        let error = |source| WatchError {
            path: dir.display().to_string(),
            source,
        };
        let (tx, events) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Reads (access events) change nothing; errors are answered by
                // the agent's periodic resync.
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    let _ = tx.send(());
                }
            })
            .map_err(error)?;
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(error)?;
        Ok(DirWatcher {
            _watcher: watcher,
            events,
        })
    }

    /// Resolves after a change, once the burst it belongs to has settled.
    pub async fn changed(&mut self) {
        if self.events.recv().await.is_none() {
            // The watcher's thread is gone: no change will ever be seen again
            // (the agent's resync still runs).
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(SETTLE).await;
        while self.events.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_written_file_wakes_the_watcher() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut watcher = DirWatcher::new(dir.path()).expect("watch");
        std::fs::write(dir.path().join("a.yaml"), "a: 1\n").expect("write");
        tokio::time::timeout(Duration::from_secs(10), watcher.changed())
            .await
            .expect("a change is reported");
    }

    #[test]
    fn a_missing_directory_cannot_be_watched() {
        let err = DirWatcher::new(Path::new("/nonexistent/lb-manifests"))
            .err()
            .expect("watching a missing directory fails");
        assert!(
            err.to_string().contains("/nonexistent/lb-manifests"),
            "{err}"
        );
    }
}
