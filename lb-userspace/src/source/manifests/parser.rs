//! Parsing files beside the load that needs them: a load waits for its
//! parses only up to a bound, then serves a late file's previous version
//! and lets its parse finish on its own, waking the agent when it is done.
//! So a slow file delays only itself.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, RecvTimeoutError},
    },
    time::Instant,
};

use tokio::sync::mpsc::UnboundedSender;

use super::{
    cache::FileKey,
    file::{FileRead, read_manifest_file},
    limits::Limits,
    memo::DocumentMemo,
};

/// Past this many parse threads at once, a load parses the rest itself:
/// a bulk rewrite of a thousand files must not start a thousand threads.
const MAX_THREADS: usize = 64;

/// How a file is read: [`read_manifest_file`], or a test's stand-in.
/// The memo is the file's last read's (documents it need not parse again).
pub(super) type ReadFn = fn(&Path, &str, &Limits, &DocumentMemo) -> FileRead;

/// A parse running on its own thread.
struct InFlight {
    key: Option<FileKey>,
    result: mpsc::Receiver<FileRead>,
    /// Set when a load stopped waiting: the thread then wakes the agent.
    late: Arc<AtomicBool>,
}

pub(super) struct Parser {
    in_flight: HashMap<PathBuf, InFlight>,
    wake: Option<UnboundedSender<()>>,
    read: ReadFn,
    /// Parses started (threads or inline), for tests.
    pub started: usize,
}

/// How one file's read went.
pub(super) enum Parsed {
    Done(Box<FileRead>),
    /// Still running past the load's deadline.
    Late,
}

impl Parser {
    pub fn new(wake: Option<UnboundedSender<()>>) -> Parser {
        Parser {
            in_flight: HashMap::new(),
            wake,
            read: read_manifest_file,
            started: 0,
        }
    }

    #[cfg(test)]
    pub fn with_read(mut self, read: ReadFn) -> Parser {
        self.read = read;
        self
    }

    /// Starts reading version `key` of `path`, unless that read is already
    /// running. Without a wake-up to give (or past [`MAX_THREADS`]), the
    /// read is left to [`Parser::finish`], on the caller's thread.
    pub fn start(
        &mut self,
        path: &Path,
        name: &str,
        key: Option<FileKey>,
        limits: &Limits,
        memo: Arc<DocumentMemo>,
    ) {
        if self.in_flight.get(path).is_some_and(|f| f.key == key) {
            return;
        }
        if self.wake.is_none() || self.in_flight.len() >= MAX_THREADS {
            self.in_flight.remove(path);
            return;
        }
        self.started += 1;
        let (tx, result) = mpsc::channel();
        let late = Arc::new(AtomicBool::new(false));
        let (path_owned, name, limits, read) =
            (path.to_owned(), name.to_owned(), *limits, self.read);
        let (wake, thread_late) = (self.wake.clone(), late.clone());
        let spawned = std::thread::Builder::new()
            .name("lb-parse".into())
            .spawn(move || {
                let _ = tx.send(read(&path_owned, &name, &limits, &memo));
                if thread_late.load(Ordering::SeqCst)
                    && let Some(wake) = wake
                {
                    let _ = wake.send(());
                }
            });
        if spawned.is_ok() {
            self.in_flight
                .insert(path.to_owned(), InFlight { key, result, late });
        }
    }

    /// The read of `path` started by [`Parser::start`] (or done here, if it
    /// was not started), waiting for it until `deadline` (none: forever).
    pub fn finish(
        &mut self,
        path: &Path,
        name: &str,
        limits: &Limits,
        deadline: Option<Instant>,
        memo: &DocumentMemo,
    ) -> Parsed {
        let Some(flight) = self.in_flight.get(path) else {
            self.started += 1;
            return Parsed::Done(Box::new((self.read)(path, name, limits, memo)));
        };
        let received = match deadline {
            None => flight
                .result
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
            Some(deadline) => flight
                .result
                .recv_timeout(deadline.saturating_duration_since(Instant::now())),
        };
        let outcome = match received {
            Ok(read) => Parsed::Done(Box::new(read)),
            Err(RecvTimeoutError::Timeout) => {
                // Marked late before looking once more: a result sent after
                // this look finds the mark and wakes the agent.
                flight.late.store(true, Ordering::SeqCst);
                match flight.result.try_recv() {
                    Ok(read) => Parsed::Done(Box::new(read)),
                    Err(_) => return Parsed::Late,
                }
            }
            // The thread died (a panic in the reader): read here instead.
            Err(RecvTimeoutError::Disconnected) => {
                Parsed::Done(Box::new((self.read)(path, name, limits, memo)))
            }
        };
        self.in_flight.remove(path);
        outcome
    }
}
