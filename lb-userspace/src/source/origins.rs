//! Which file each object of a snapshot came from, for `lb status`. Each
//! read of a file records its objects once, by pointer (`Arc`s shared with
//! the snapshot); the names ("Service ns/name") are only formatted when a
//! problem's file is asked for. Formatting them at every read was most of
//! a manifest-mode sync's snapshot at 10,000 Services (20,000 names and a
//! map of them, each time the one changed file was read again).

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use k8s_openapi::{api::core::v1::Service, apimachinery::pkg::apis::meta::v1::ObjectMeta};

use super::Slice;

/// The files of a snapshot's objects and problems, the first file first:
/// an object named by two files is the first one's, as the first
/// definition wins.
#[derive(Clone, Debug, Default)]
pub struct Origins {
    files: Vec<Arc<FileOrigin>>,
    /// Name to file, made at the first question.
    index: OnceLock<HashMap<String, usize>>,
}

/// What one file gave.
#[derive(Debug, PartialEq)]
struct FileOrigin {
    file: String,
    services: Vec<Arc<Service>>,
    slices: Vec<Arc<Slice>>,
    /// The objects its problems name ("web.yaml (document 2)").
    problems: Vec<String>,
}

impl PartialEq for Origins {
    fn eq(&self, other: &Origins) -> bool {
        self.files == other.files
    }
}

impl Origins {
    /// Records that these objects and the objects these problems name came
    /// from `file` (after what is recorded already).
    pub(crate) fn record(
        &mut self,
        file: &str,
        services: &[Arc<Service>],
        slices: &[Arc<Slice>],
        problems: impl IntoIterator<Item = String>,
    ) {
        self.files.push(Arc::new(FileOrigin {
            file: file.to_owned(),
            services: services.to_vec(),
            slices: slices.to_vec(),
            problems: problems.into_iter().collect(),
        }));
        self.index = OnceLock::new();
    }

    /// Adds another snapshot's origins after these.
    pub(crate) fn extend(&mut self, other: Origins) {
        self.files.extend(other.files);
        self.index = OnceLock::new();
    }

    /// The file `object` (as a problem names it) came from, if known.
    pub fn file_of(&self, object: &str) -> Option<&str> {
        let index = self.index.get_or_init(|| self.build_index());
        index.get(object).map(|&i| self.files[i].file.as_str())
    }

    fn build_index(&self) -> HashMap<String, usize> {
        let mut index = HashMap::new();
        for (i, origin) in self.files.iter().enumerate() {
            let services = origin.services.iter().map(|s| name("Service", &s.metadata));
            let slices = (origin.slices.iter()).map(|s| name("EndpointSlice", &s.metadata));
            for object in services
                .chain(slices)
                .chain(origin.problems.iter().cloned())
            {
                index.entry(object).or_insert(i);
            }
        }
        index
    }
}

/// How problems name an object.
fn name(kind: &str, meta: &ObjectMeta) -> String {
    format!(
        "{kind} {}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}
