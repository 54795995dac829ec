//! One reflector per kind: a kube-rs watcher (list, then watch; relist on
//! 410 Gone), retried with kube-rs's default backoff (client-go's
//! reflector parameters), feeding a store of the objects as lb keeps them
//! (`store`), which the snapshots read.

use std::{
    fmt::Debug,
    hash::Hash,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use futures::StreamExt;
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        watcher::{self, Event},
    },
};
use serde::de::DeserializeOwned;
use tokio::{sync::watch, task::JoinHandle};
use tracing::{debug, info, warn};

use super::{
    error_log::{ErrorLog, Line},
    store::Store,
};
use crate::source::compact::Compact;

/// A reflector's store and whether it has listed once; its task runs until
/// aborted.
pub struct Reflector<T> {
    pub store: Store<T>,
    listed: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl<T> Reflector<T> {
    /// The store holds a complete list (it may be older than the server's
    /// state while a relist runs: the store is swapped only when the new
    /// list is complete).
    pub fn listed(&self) -> bool {
        self.listed.load(Ordering::SeqCst)
    }
}

impl<T> Drop for Reflector<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts reflecting `api` (filtered by `config`) into a store of what
/// `keep` makes of each object. Every change of the store bumps `wake`,
/// after the store holds it.
pub fn spawn<K, T>(
    api: Api<K>,
    config: watcher::Config,
    kind: &'static str,
    wake: watch::Sender<u64>,
    keep: fn(K) -> T,
) -> Reflector<T>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + Compact + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    T: Send + Sync + 'static,
{
    let store = Store::default();
    let listed = Arc::new(AtomicBool::new(false));
    let stream = watcher::watcher(api, config)
        .default_backoff()
        // Nobody reads these; at 10,000 Services they are most of the memory.
        .modify(|object: &mut K| {
            object.managed_fields_mut().clear();
            object
                .annotations_mut()
                .remove("kubectl.kubernetes.io/last-applied-configuration");
            object.compact();
        });
    let task = tokio::spawn(drive(
        stream,
        store.clone(),
        keep,
        kind,
        listed.clone(),
        wake,
    ));
    Reflector {
        store,
        listed,
        task,
    }
}

/// Polls the reflector forever: that is what keeps its store current.
async fn drive<K: Resource, T>(
    stream: impl futures::Stream<Item = Result<Event<K>, watcher::Error>> + Send,
    store: Store<T>,
    keep: fn(K) -> T,
    kind: &'static str,
    listed: Arc<AtomicBool>,
    wake: watch::Sender<u64>,
) {
    let mut stream = std::pin::pin!(stream);
    let mut errors = ErrorLog::default();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                // `Init` comes before the list request: it proves nothing.
                let proves_success = !matches!(event, Event::Init);
                if proves_success && let Line::Recovered { failures } = errors.succeeded() {
                    info!(kind, failures, "watch works again");
                }
                let listed_now = matches!(event, Event::InitDone);
                let changed_store =
                    listed_now || matches!(event, Event::Apply(_) | Event::Delete(_));
                // The store first: a snapshot that sees `listed` must see
                // the complete list.
                store.apply(event, keep);
                if listed_now {
                    if !listed.swap(true, Ordering::SeqCst) {
                        info!(kind, "initial list complete");
                    } else {
                        info!(
                            kind,
                            "relisted (the watch expired or the API server restarted)"
                        );
                    }
                }
                if changed_store {
                    wake.send_modify(|generation| *generation += 1);
                }
            }
            Err(err) => match errors.failed(Instant::now()) {
                Line::Failed { suppressed } => warn!(
                    kind,
                    suppressed,
                    "watch failed, retrying with backoff (the maps keep their state): {err}"
                ),
                _ => debug!(kind, "watch failed again: {err}"),
            },
        }
    }
}
