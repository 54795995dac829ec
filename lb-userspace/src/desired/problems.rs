//! The problems found while computing the desired state.

use std::collections::BTreeSet;

use crate::model::{Problem, ProblemCode};

/// Problems in the order found, each reported once.
#[derive(Default)]
pub(super) struct Problems {
    list: Vec<Problem>,
    seen: BTreeSet<(String, String)>,
}

impl Problems {
    /// Part or all of `object` is not served.
    pub(super) fn push(&mut self, object: &str, code: ProblemCode, reason: impl Into<String>) {
        self.add(Problem::error(object, code, reason));
    }

    /// `object` is served, with a caveat.
    pub(super) fn warn(&mut self, object: &str, code: ProblemCode, reason: impl Into<String>) {
        self.add(Problem::warning(object, code, reason));
    }

    fn add(&mut self, problem: Problem) {
        if self
            .seen
            .insert((problem.object.clone(), problem.reason.clone()))
        {
            self.list.push(problem);
        }
    }

    pub(super) fn into_vec(self) -> Vec<Problem> {
        self.list
    }
}
