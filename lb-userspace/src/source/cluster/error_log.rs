//! Watch errors in the log: the first of a run of failures, then at most
//! one line a minute while they go on, then one line when the watch works
//! again. The watcher retries each with backoff; an API server that stays
//! down for an hour must not fill the log.

use std::time::{Duration, Instant};

/// How often a run of failures is reported while it lasts.
pub const REPEAT_EVERY: Duration = Duration::from_secs(60);

/// What to log for one watch event or error.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Quiet,
    /// A failure to report, with the failures not reported since the last.
    Failed {
        suppressed: u64,
    },
    /// Working again after this many failures.
    Recovered {
        failures: u64,
    },
}

/// The state of one watch's run of failures.
#[derive(Debug, Default)]
pub struct ErrorLog {
    failures: u64,
    suppressed: u64,
    last_reported: Option<Instant>,
}

impl ErrorLog {
    pub fn failed(&mut self, now: Instant) -> Line {
        self.failures += 1;
        let due = self
            .last_reported
            .is_none_or(|last| now.duration_since(last) >= REPEAT_EVERY);
        if due {
            self.last_reported = Some(now);
            Line::Failed {
                suppressed: std::mem::take(&mut self.suppressed),
            }
        } else {
            self.suppressed += 1;
            Line::Quiet
        }
    }

    pub fn succeeded(&mut self) -> Line {
        if self.failures == 0 {
            return Line::Quiet;
        }
        let failures = std::mem::take(&mut self.failures);
        *self = ErrorLog::default();
        Line::Recovered { failures }
    }
}
