//! When the reflectors' stores may be served: the rule that keeps a
//! half-listed cluster from deleting what the maps hold.

use crate::source::SourceError;

/// What each reflector has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub services_listed: bool,
    pub slices_listed: bool,
    pub node_listed: bool,
    /// The Node object is in the node reflector's store.
    pub node_present: bool,
}

/// A snapshot may be taken once every reflector has listed once (a store
/// swapped in whole by its first `InitDone`, as client-go's
/// `WaitForCacheSync` waits for `HasSynced`) and this node's Node object
/// exists (kube-proxy's NodeManager, pkg/proxy/node.go, waits for it too:
/// its addresses and zone decide the NodePorts and topology). Until then
/// the agent keeps what it has: a Service missing from an incomplete list
/// must not read as deleted.
pub fn check(progress: Progress, server: &str, node: &str) -> Result<(), SourceError> {
    let waiting: Vec<&str> = [
        (progress.services_listed, "Services"),
        (progress.slices_listed, "EndpointSlices"),
        (progress.node_listed, "this node's Node"),
    ]
    .into_iter()
    .filter(|(listed, _)| !listed)
    .map(|(_, what)| what)
    .collect();
    if !waiting.is_empty() {
        return Err(SourceError::NotListed {
            server: server.to_owned(),
            waiting: waiting.join(", "),
        });
    }
    if !progress.node_present {
        return Err(SourceError::NodeMissing {
            server: server.to_owned(),
            node: node.to_owned(),
        });
    }
    Ok(())
}
