//! Where Services, EndpointSlices and the node's facts come from.
//!
//! A [`Source`] answers with a whole [`Snapshot`] or with an error, never
//! with an empty snapshot in place of one it could not take: the agent
//! deletes what a snapshot no longer holds, so "the directory was briefly
//! unreadable" or "the initial list is not complete yet" must keep the
//! current state, not read as "every Service was deleted".
pub mod cluster;
pub mod compact;
pub mod manifests;
pub mod node;
mod origins;
pub mod slice;
mod snapshot;
pub mod watch;

use std::future::Future;

pub use cluster::{ClusterConfig, ClusterSource, NodePortAddresses};
pub use manifests::{Limits, ManifestDir};
pub use origins::Origins;
pub use slice::Slice;
pub use snapshot::{Snapshot, SourceError};

/// Something that knows the Services and EndpointSlices the node must serve.
///
/// The agent waits on [`Source::changed`], then takes a [`Source::snapshot`]
/// and reconciles the datapath to it. A source coalesces bursts of changes
/// into one wake-up; the agent also takes snapshots on its own (a periodic
/// resync), so a source must answer `snapshot` at any time.
///
/// A source backed by Kubernetes reflectors fits the same shape: `changed`
/// awaits the next watch event of either reflector, and `snapshot` reads the
/// reflectors' stores, failing until both initial lists are complete (so
/// nothing is deleted before then) and answering from the relisted stores
/// after a watch expiry (so deletions missed meanwhile are applied).
pub trait Source {
    /// Everything the source holds now. An error means "cannot tell": the
    /// caller keeps what it has. A future, so that reading (parsing a large
    /// manifest) runs off the agent's runtime threads.
    fn snapshot(&self) -> impl Future<Output = Result<Snapshot, SourceError>> + Send;

    /// Resolves when the source may hold something new. The agent drops
    /// this future when it syncs for another reason (a resync), so dropping
    /// it must lose nothing but the wake-up itself.
    fn changed(&mut self) -> impl Future<Output = ()> + Send;
}
