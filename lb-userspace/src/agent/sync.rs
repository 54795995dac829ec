//! One reconciliation: source snapshot -> desired state -> plan -> apply.

use std::{collections::BTreeSet, time::Instant};

use tracing::{info, warn};

use crate::{
    datapath::DatapathMaps,
    desired,
    model::{DesiredState, NodeFacts},
    plan::{self, Applied},
    source::{Snapshot, Source},
};

/// The desired state of a snapshot: the objects the source could not read
/// are reported first, then those the desired state could not use.
pub(super) fn desired_state(snapshot: Snapshot, node: &NodeFacts) -> DesiredState {
    let mut state = desired::compute(&snapshot.services, &snapshot.slices, node);
    let mut problems = snapshot.problems;
    problems.append(&mut state.problems);
    state.problems = problems;
    state
}

/// Reconciles the maps to a source; remembers what was last reported, so a
/// periodic resync does not repeat the same warnings.
pub(super) struct Syncer {
    node: NodeFacts,
    reported: BTreeSet<String>,
}

impl Syncer {
    pub fn new(node: NodeFacts) -> Syncer {
        Syncer {
            node,
            reported: BTreeSet::new(),
        }
    }

    /// Makes the maps what the source says. Whatever fails keeps the current
    /// state, to be retried at the next change or resync.
    pub fn sync(
        &mut self,
        source: &impl Source,
        maps: &mut dyn DatapathMaps,
        applied: &mut Applied,
    ) {
        let started = Instant::now();
        let snapshot = match source.snapshot() {
            Ok(snapshot) => snapshot,
            Err(err) => {
                warn!("keeping the current state: {err}");
                return;
            }
        };
        let desired = desired_state(snapshot, &self.node);
        self.report(&desired);
        let plan = match plan::plan(&desired, applied, maps.max_tables()) {
            Ok(plan) => plan,
            Err(err) => {
                warn!("keeping the current state: {err}");
                return;
            }
        };
        if plan.is_empty() {
            return;
        }
        match plan::apply(&plan, maps, applied) {
            Ok(()) => info!(
                frontends = desired.frontends.len(),
                changes = plan.set_frontends.len() + plan.remove_frontends.len(),
                tables = plan.write_tables.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "synced"
            ),
            Err(err) => {
                warn!("applying the plan failed, will retry: {err}");
                match Applied::read(maps) {
                    Ok(fresh) => *applied = fresh,
                    Err(err) => warn!("re-reading the maps failed: {err}"),
                }
            }
        }
    }

    fn report(&mut self, desired: &DesiredState) {
        let now: BTreeSet<String> = desired.problems.iter().map(ToString::to_string).collect();
        for problem in now.difference(&self.reported) {
            warn!("skipped: {problem}");
        }
        self.reported = now;
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, collections::BTreeMap, path::Path};

    use lb_common::{Backend4, Frontend4Key, FrontendValue, ServiceInfo};

    use super::*;
    use crate::{
        datapath::MapsError,
        source::{SourceError, manifests},
    };

    /// The maps as plain collections.
    #[derive(Default)]
    struct MemoryMaps {
        services: BTreeMap<u32, ServiceInfo>,
        frontends: BTreeMap<Frontend4Key, FrontendValue>,
        backends: BTreeMap<u32, Backend4>,
        tables: BTreeMap<u32, Vec<u32>>,
    }

    impl DatapathMaps for MemoryMaps {
        fn max_tables(&self) -> u32 {
            4
        }
        fn frontends(&self) -> Result<Vec<(Frontend4Key, FrontendValue)>, MapsError> {
            Ok(self.frontends.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn backends(&self) -> Result<Vec<(u32, Backend4)>, MapsError> {
            Ok(self.backends.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn set_backend(&mut self, id: u32, backend: &Backend4) -> Result<(), MapsError> {
            self.backends.insert(id, *backend);
            Ok(())
        }
        fn remove_backend(&mut self, id: u32) -> Result<(), MapsError> {
            self.backends.remove(&id);
            Ok(())
        }
        fn write_table(&mut self, table_id: u32, slots: &[u32]) -> Result<(), MapsError> {
            self.tables.insert(table_id, slots.to_vec());
            Ok(())
        }
        fn read_table(&self, table_id: u32) -> Result<Vec<u32>, MapsError> {
            Ok(self.tables[&table_id].clone())
        }
        fn set_frontend(
            &mut self,
            key: &Frontend4Key,
            value: &FrontendValue,
        ) -> Result<(), MapsError> {
            self.frontends.insert(*key, *value);
            Ok(())
        }
        fn services(&self) -> Result<Vec<(u32, ServiceInfo)>, MapsError> {
            Ok(self.services.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn set_service(&mut self, id: u32, info: &ServiceInfo) -> Result<(), MapsError> {
            self.services.insert(id, *info);
            Ok(())
        }
        fn remove_service(&mut self, id: u32) -> Result<(), MapsError> {
            self.services.remove(&id);
            Ok(())
        }
        fn remove_frontend(&mut self, key: &Frontend4Key) -> Result<(), MapsError> {
            self.frontends.remove(key);
            Ok(())
        }
        fn purge_connections_to(&mut self, _: &[Backend4]) -> Result<usize, MapsError> {
            Ok(0)
        }
    }

    /// A source that answers whatever the test last told it to.
    struct Scripted(RefCell<Option<Snapshot>>);

    impl Scripted {
        fn answer(&self, snapshot: Option<Snapshot>) {
            *self.0.borrow_mut() = snapshot;
        }
    }

    impl Source for Scripted {
        fn snapshot(&self) -> Result<Snapshot, SourceError> {
            self.0
                .borrow()
                .clone()
                .ok_or_else(|| SourceError::Unreadable {
                    path: Path::new("/manifests").to_owned(),
                    source: std::io::ErrorKind::NotFound.into(),
                })
        }
        fn changed(&mut self) -> impl Future<Output = ()> + Send {
            std::future::pending()
        }
    }

    const WEB: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.244.1.7]
  conditions: {ready: true}
";

    #[test]
    fn a_source_that_cannot_tell_keeps_the_current_state_and_an_empty_one_empties_it() {
        let source = Scripted(RefCell::new(Some(manifests::parse_documents(
            "web.yaml", WEB,
        ))));
        let mut maps = MemoryMaps::default();
        let mut applied = Applied::default();
        let mut syncer = Syncer::new(NodeFacts {
            name: "node-a".into(),
            ..NodeFacts::default()
        });

        syncer.sync(&source, &mut maps, &mut applied);
        assert_eq!(maps.frontends.len(), 1);
        assert_eq!(maps.backends.len(), 1);

        source.answer(None);
        syncer.sync(&source, &mut maps, &mut applied);
        assert_eq!(
            maps.frontends.len(),
            1,
            "an unreadable source deleted the state"
        );
        assert_eq!(maps.backends.len(), 1);

        source.answer(Some(Snapshot::default()));
        syncer.sync(&source, &mut maps, &mut applied);
        assert!(maps.frontends.is_empty());
        assert!(maps.backends.is_empty());
    }
}
