//! What a source holds at one moment, and why it may be unable to say.

use std::path::PathBuf;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use crate::model::{Problem, ProblemCode};

/// The Services and EndpointSlices a source holds, plus the objects it had
/// to skip (a broken document, an unreadable file) and why.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
    pub problems: Vec<Problem>,
}

impl Snapshot {
    /// Appends another snapshot, keeping order (the first definition of an
    /// object stays first, which is what later deduplication relies on).
    pub fn extend(&mut self, other: Snapshot) {
        self.services.extend(other.services);
        self.slices.extend(other.slices);
        self.problems.extend(other.problems);
    }

    /// Both snapshots, `self` first.
    pub fn merge(mut self, other: Snapshot) -> Snapshot {
        self.extend(other);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.slices.is_empty() && self.problems.is_empty()
    }

    pub(crate) fn problem(&mut self, object: impl Into<String>, reason: impl Into<String>) {
        // The source's own codes are the source's to refine.
        self.problems
            .push(Problem::error(object, ProblemCode::InvalidManifest, reason));
    }
}

/// Why a source cannot give a snapshot now. Never answered with an empty
/// snapshot instead: that would delete every Service.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "cannot list the manifest directory {}: {source}; check that it exists and that lb may read it",
        path.display()
    )]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
