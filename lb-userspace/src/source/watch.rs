//! Watching a directory for changes (inotify through `notify`).

use std::path::Path;

use notify::{
    Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher,
    event::{AccessKind, AccessMode, ModifyKind},
};
use tokio::sync::mpsc;

use super::manifests::HeldFiles;

#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path} for changes: {source}; check that the directory exists")]
pub struct WatchError {
    path: String,
    #[source]
    source: notify::Error,
}

/// Tells when a file in one directory (not its subdirectories) was
/// written and closed, renamed, created or removed.
///
/// A write alone wakes nothing: the file is then marked held (see
/// [`HeldFiles`]) until its writer closes it, so that `cat > eps.yaml`
/// is read once, whole, rather than as the empty or half-written file it
/// is in between.
pub struct DirWatcher {
    // Dropping the watcher ends the watch: it lives as long as we do.
    _watcher: RecommendedWatcher,
    events: mpsc::UnboundedReceiver<()>,
    wake: mpsc::UnboundedSender<()>,
}

impl DirWatcher {
    pub fn new(dir: &Path, held: HeldFiles) -> Result<DirWatcher, WatchError> {
        let error = |source| WatchError {
            path: dir.display().to_string(),
            source,
        };
        let (tx, events) = mpsc::unbounded_channel();
        let wake = tx.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Errors are answered by the agent's periodic resync.
                if let Ok(event) = event
                    && track(&event, &held)
                {
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
            wake,
        })
    }

    /// A sender whose message [`DirWatcher::changed`] reports like a change
    /// (a parse that finished late).
    pub fn waker(&self) -> mpsc::UnboundedSender<()> {
        self.wake.clone()
    }
    /// Resolves at once after a change, with the wake-ups already queued
    /// taken along. No settle time: a file counts once its writer closed it
    /// or it was renamed in (see [`track`]), so it is whole, and a burst of
    /// files is what the agent's runner coalesces (`--min-sync-period`, as
    /// kube-proxy's BoundedFrequencyRunner coalesces a burst of watch
    /// events); a wait here would be paid by every change (it was 50 ms).
    pub async fn changed(&mut self) {
        if self.events.recv().await.is_none() {
            // The watcher's thread is gone: no change will ever be seen again
            // (the agent's resync still runs).
            std::future::pending::<()>().await;
        }
        while self.events.try_recv().is_ok() {}
    }
}

/// Updates which files a writer holds; true when the event is a change
/// worth reading the directory again for.
fn track(event: &Event, held: &HeldFiles) -> bool {
    let mut held = held
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if event.need_rescan() {
        // Events were lost: what is held is unknown, read everything.
        held.clear();
        return true;
    }
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write))
        | EventKind::Modify(ModifyKind::Name(_))
        | EventKind::Remove(_) => {
            for path in &event.paths {
                held.remove(path);
            }
            true
        }
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
            held.extend(event.paths.iter().cloned());
            false
        }
        // A regular file just created is open for writing (a symlink,
        // FIFO or directory is complete as it is).
        EventKind::Create(_) => {
            for path in &event.paths {
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
                    held.insert(path.clone());
                }
            }
            !event.paths.iter().all(|path| held.contains(path))
        }
        EventKind::Access(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_written_file_wakes_the_watcher() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut watcher = DirWatcher::new(dir.path(), HeldFiles::default()).expect("watch");
        std::fs::write(dir.path().join("a.yaml"), "a: 1\n").expect("write");
        tokio::time::timeout(Duration::from_secs(10), watcher.changed())
            .await
            .expect("a change is reported");
    }

    #[test]
    fn a_missing_directory_cannot_be_watched() {
        let err = DirWatcher::new(Path::new("/nonexistent/lb-manifests"), HeldFiles::default())
            .err()
            .expect("watching a missing directory fails");
        assert!(
            err.to_string().contains("/nonexistent/lb-manifests"),
            "{err}"
        );
    }
}
