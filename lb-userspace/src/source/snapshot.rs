//! What a source holds at one moment, and why it may be unable to say.

use std::{path::PathBuf, sync::Arc};

use k8s_openapi::api::core::v1::Service;

use super::{Origins, Slice};
use crate::model::{NodeFacts, Problem, ProblemCode};

/// The Services and EndpointSlices a source holds, plus the objects it had
/// to skip (a broken document, an unreadable file) and why. The objects
/// are shared with the source (a reflector's store, the manifest cache):
/// a snapshot copies pointers, not objects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<Slice>>,
    pub problems: Vec<Problem>,
    /// The file each object and each problem's object came from, by the
    /// name problems call it ("Service ns/name", "web.yaml (document 2)"),
    /// for `lb status`. The first file wins, as the first definition does.
    pub files: Origins,
    /// The node's facts as the source knows them (cluster mode: the Node
    /// object and the interfaces); `None`: the agent's configured facts.
    pub node: Option<NodeFacts>,
    /// Whether the node may serve, as kube-proxy's `/healthz` judges it (a
    /// Node being deleted, or marked for deletion by the autoscaler, may
    /// not); `None`: the source cannot tell (manifests).
    pub node_eligible: Option<bool>,
}

impl Snapshot {
    /// Appends another snapshot, keeping order (the first definition of an
    /// object stays first, which is what later deduplication relies on).
    pub fn extend(&mut self, other: Snapshot) {
        self.services.extend(other.services);
        self.slices.extend(other.slices);
        self.problems.extend(other.problems);
        self.files.extend(other.files);
        if self.node.is_none() {
            self.node = other.node;
        }
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
        self.coded_problem(ProblemCode::InvalidManifest, object, reason);
    }

    pub(crate) fn coded_problem(
        &mut self,
        code: ProblemCode,
        object: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.problems.push(Problem::error(object, code, reason));
    }

    /// A problem that leaves nothing unserved that would be served without
    /// it, but that the user should hear of.
    pub(crate) fn coded_warning(
        &mut self,
        code: ProblemCode,
        object: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.problems.push(Problem::warning(object, code, reason));
    }

    /// The file `object` (as a problem names it) came from, if known.
    pub fn file_of(&self, object: &str) -> Option<&str> {
        self.files.file_of(object)
    }

    /// Records that everything this snapshot holds came from `file`.
    pub(crate) fn attribute_to(&mut self, file: &str) {
        let problems = self.problems.iter().map(|p| p.object.clone());
        (self.files).record(file, &self.services, &self.slices, problems);
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
    #[error("reading the manifests failed: {0}; this is a bug in lb, please report it")]
    Failed(String),
    #[error(
        "the initial lists from the API server at {server} are not complete yet (waiting for {waiting}); \
         nothing is changed until they are: check that the API server is reachable and that lb may \
         list and watch services, endpointslices (discovery.k8s.io) and nodes"
    )]
    NotListed { server: String, waiting: String },
    #[error(
        "this node's Node object {node:?} does not exist in the API server at {server}; waiting for it \
         (as kube-proxy does): check --node-name (or NODE_NAME) against `kubectl get nodes`"
    )]
    NodeMissing { server: String, node: String },
    #[error(
        "cannot list this node's interface addresses for NodePorts: {0}; check --nodeport-addresses"
    )]
    Interfaces(#[source] super::node::NodeError),
}

impl SourceError {
    /// The source will answer once something outside lb happens (the
    /// initial lists complete, the Node object appears): worth waiting for.
    pub fn is_waiting(&self) -> bool {
        matches!(
            self,
            SourceError::NotListed { .. } | SourceError::NodeMissing { .. }
        )
    }
}
