//! How much one manifest file may ask of the agent. Past a limit the file
//! is a problem of its own (and keeps its last good version), so that no
//! file can stall the agent or exhaust its memory.

/// Limits on one manifest file (`--manifest-max-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Larger files are not read at all.
    pub max_file_bytes: u64,
    /// More documents than this in one file: the file is refused.
    pub max_documents: usize,
    /// Deeper nesting of mappings and sequences: the document is refused.
    pub max_depth: usize,
}

impl Limits {
    /// 16 MiB is eight times the largest object etcd stores (1.5 MiB) with
    /// room to spare; 50,000 documents hold a large cluster's Services and
    /// EndpointSlices in one file; Kubernetes objects nest about 10 deep,
    /// and 64 is serde-saphyr's own default.
    pub const DEFAULT: Limits = Limits {
        max_file_bytes: 16 * 1024 * 1024,
        max_documents: 50_000,
        max_depth: 64,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
