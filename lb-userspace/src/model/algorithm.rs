//! The balancing algorithm of a Service (`lb.kubernetes.io/algorithm`):
//! how its new flows pick a backend (see `lb_common::algorithm`).

use std::fmt;

/// How new flows of a Service pick a backend among its chosen endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// The flow's hash in the Service's Maglev table: the same backend on
    /// every node, minimal disruption when the backends change.
    #[default]
    Maglev,
    /// A random backend per new flow (kube-proxy's `statistic --mode random`).
    Random,
    /// Of two random backends, the one with fewer live connections.
    LeastConnections,
}

impl Algorithm {
    pub const ALL: [Algorithm; 3] = [
        Algorithm::Maglev,
        Algorithm::Random,
        Algorithm::LeastConnections,
    ];

    /// The annotation's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::Maglev => "maglev",
            Algorithm::Random => "random",
            Algorithm::LeastConnections => "least-connections",
        }
    }

    /// The annotation value's algorithm; `None` for any other spelling.
    pub fn from_annotation(value: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == value)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
