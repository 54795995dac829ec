//! The problems found while computing the desired state.

use std::collections::BTreeSet;

use crate::model::Problem;

/// Problems in the order found, each reported once.
#[derive(Default)]
pub(super) struct Problems {
    list: Vec<Problem>,
    seen: BTreeSet<(String, String)>,
}

impl Problems {
    pub(super) fn push(&mut self, object: &str, reason: impl Into<String>) {
        let reason = reason.into();
        if self.seen.insert((object.to_owned(), reason.clone())) {
            self.list.push(Problem {
                object: object.to_owned(),
                reason,
            });
        }
    }

    pub(super) fn into_vec(self) -> Vec<Problem> {
        self.list
    }
}
