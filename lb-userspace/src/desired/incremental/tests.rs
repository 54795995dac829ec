//! The tracker against its oracle: after every change, the incremental
//! desired state is the one `desired::compute` gives for the whole
//! snapshot (problems compared as sets, see the module doc).

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use proptest::prelude::*;
use serde_json::json;

use super::{Tracker, UpdateStats, inputs};
use crate::{
    desired::test_support::*,
    source::slice::{Slice, SliceEndpoint},
};

fn oracle(
    services: &[impl std::borrow::Borrow<Service>],
    slices: &[impl std::borrow::Borrow<Slice>],
    node: &NodeFacts,
    holders: &Holders,
) -> DesiredState {
    crate::desired::compute(services, slices, node, &Rules::default(), holders)
}

fn sorted_problems(state: &DesiredState) -> Vec<Problem> {
    let mut problems = state.problems.clone();
    problems.sort_by(|a, b| (&a.object, &a.reason).cmp(&(&b.object, &b.reason)));
    problems
}

fn assert_same(incremental: &DesiredState, full: &DesiredState) {
    assert_eq!(incremental.frontends, full.frontends);
    assert_eq!(incremental.services, full.services);
    assert_eq!(sorted_problems(incremental), sorted_problems(full));
}

/// A Service from a small universe, so that names, frontends and
/// addresses collide often: 10.0.0.1 is also an endpoint address.
fn service(
    ns: u8,
    name: u8,
    ip: u8,
    port: u16,
    node_port: Option<u16>,
    age: Option<u8>,
    version: Option<u32>,
) -> Service {
    let mut ports = json!([{"name": "p", "port": port, "protocol": "TCP"}]);
    if let Some(node_port) = node_port {
        ports[0]["nodePort"] = json!(node_port);
    }
    let mut meta = json!({"namespace": format!("ns{ns}"), "name": format!("s{name}")});
    if let Some(age) = age {
        meta["creationTimestamp"] = json!(format!("2026-01-01T00:00:{age:02}Z"));
    }
    if let Some(version) = version {
        meta["uid"] = json!(format!("uid-s-{ns}-{name}"));
        meta["resourceVersion"] = json!(version.to_string());
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": meta,
        "spec": {
            "type": if node_port.is_some() { "NodePort" } else { "ClusterIP" },
            "clusterIP": format!("10.0.0.{ip}"),
            "ports": ports,
        }
    }))
    .expect("a valid Service")
}

fn slice(ns: u8, name: u8, service: u8, addrs: &[u8], port: u16, version: Option<u32>) -> Slice {
    let mut meta = json!({
        "namespace": format!("ns{ns}"), "name": format!("e{name}"),
        "labels": {"kubernetes.io/service-name": format!("s{service}")},
    });
    if let Some(version) = version {
        meta["uid"] = json!(format!("uid-e-{ns}-{name}"));
        meta["resourceVersion"] = json!(version.to_string());
    }
    let endpoints: Vec<_> = addrs
        .iter()
        .map(|a| json!({"addresses": [format!("10.0.0.{a}")], "conditions": conditions(*a)}))
        .collect();
    serde_json::from_value::<EndpointSlice>(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta,
        "addressType": "IPv4",
        "ports": [{"name": "p", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .expect("a valid EndpointSlice")
    .into()
}

/// Address 6 is draining (serving, terminating), 7 not ready: endpoints
/// listed but chosen only when nothing is ready, which hold backends all
/// the same (the plan's listed references).
fn conditions(address: u8) -> serde_json::Value {
    match address {
        6 => json!({"ready": false, "serving": true, "terminating": true}),
        7 => json!({"ready": false, "serving": false}),
        _ => json!({"ready": true}),
    }
}

#[derive(Clone, Debug)]
enum Change {
    PutService {
        ns: u8,
        name: u8,
        ip: u8,
        port: u16,
        node_port: Option<u16>,
        age: Option<u8>,
        duplicate: bool,
    },
    DeleteService(usize),
    PutSlice {
        ns: u8,
        name: u8,
        service: u8,
        addrs: Vec<u8>,
        port: u16,
    },
    DeleteSlice(usize),
    MoveNode(u8),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (0..2u8, 0..4u8, 1..5u8, 80..82u16, proptest::option::of(30000..30002u16), proptest::option::of(0..3u8), proptest::bool::weighted(0.15))
            .prop_map(|(ns, name, ip, port, node_port, age, duplicate)| Change::PutService { ns, name, ip, port, node_port, age, duplicate }),
        1 => (0..8usize).prop_map(Change::DeleteService),
        4 => (0..2u8, 0..5u8, 0..4u8, proptest::collection::vec(1..8u8, 0..3), 8080..8082u16)
            .prop_map(|(ns, name, service, addrs, port)| Change::PutSlice { ns, name, service, addrs, port }),
        1 => (0..8usize).prop_map(Change::DeleteSlice),
        1 => (0..2u8).prop_map(Change::MoveNode),
    ]
}

/// The objects a source holds: API objects (uid and resourceVersion,
/// unique names) or manifests (no versions, duplicates allowed).
struct World {
    api: bool,
    services: Vec<Arc<Service>>,
    slices: Vec<Arc<Slice>>,
    node: NodeFacts,
    version: u32,
}

impl World {
    fn apply(&mut self, change: Change) {
        self.version += 1;
        let version = self.api.then_some(self.version);
        match change {
            Change::PutService {
                ns,
                name,
                ip,
                port,
                node_port,
                age,
                duplicate,
            } => {
                let new = Arc::new(service(ns, name, ip, port, node_port, age, version));
                let same = |s: &Arc<Service>| {
                    s.metadata.namespace == new.metadata.namespace
                        && s.metadata.name == new.metadata.name
                };
                match self.services.iter().position(same) {
                    Some(at) if self.api || !duplicate => self.services[at] = new,
                    _ => self.services.push(new),
                }
            }
            Change::DeleteService(at) if at < self.services.len() => {
                self.services.remove(at);
            }
            Change::PutSlice {
                ns,
                name,
                service,
                addrs,
                port,
            } => {
                let new = Arc::new(slice(ns, name, service, &addrs, port, version));
                let same = |s: &Arc<Slice>| {
                    s.metadata.namespace == new.metadata.namespace
                        && s.metadata.name == new.metadata.name
                };
                match self.slices.iter().position(same) {
                    Some(at) => self.slices[at] = new,
                    None => self.slices.push(new),
                }
            }
            Change::DeleteSlice(at) if at < self.slices.len() => {
                self.slices.remove(at);
            }
            Change::MoveNode(address) => {
                self.node.addresses = vec![Ipv4Addr::new(192, 168, 1, 10 + address).into()];
            }
            Change::DeleteService(_) | Change::DeleteSlice(_) => {}
        }
    }
}

/// Runs the changes, checking the tracker against the oracle after each,
/// and the maps its plans program against those the oracle's plans do;
/// the holders are read from the maps, as the agent reads them.
/// `shared`: the tracker takes the objects as shared ones (`update_shared`,
/// the agent's call), else borrowed (`update`).
fn check(api: bool, shared: bool, changes: Vec<Change>, reset_every: usize) {
    let mut world = World {
        api,
        services: vec![],
        slices: vec![],
        node: node("node-a"),
        version: 0,
    };
    let mut tracker = Tracker::new(Rules::default());
    let mut incremental_maps = Programmed::default();
    let mut full_maps = Programmed::default();
    let mut planned_maps = Programmed::default();
    let mut planner = crate::plan::Planner::new();
    for (step, change) in changes.into_iter().enumerate() {
        world.apply(change.clone());
        if reset_every > 0 && step % reset_every == 0 {
            tracker.reset();
        }
        let holders = incremental_maps.holders();
        let full = oracle(&world.services, &world.slices, &world.node, &holders);
        let holders = || holders.clone();
        if shared {
            tracker.update_shared(&world.services, &world.slices, &world.node, &holders);
        } else {
            tracker.update(&world.services, &world.slices, &world.node, &holders);
        }
        let incremental = &tracker.state;
        assert_same(incremental, &full);
        incremental_maps.program(incremental);
        full_maps.program(&full);
        assert_eq!(incremental_maps.contents(), full_maps.contents());
        // The plan of only what changed programs what the whole plan does
        // (ids aside: it may hand them out in another order).
        planned_maps.program_changes(&mut planner, incremental, tracker.changes());
        assert_eq!(planned_maps.served(), full_maps.served(), "step {step}");
        assert_eq!(planned_maps.maps.dangling(), Vec::<String>::new());
    }
}

/// An in-memory datapath and what the agent knows it holds.
struct Programmed {
    maps: crate::datapath::MemoryMaps,
    applied: crate::plan::Applied,
}

impl Default for Programmed {
    fn default() -> Self {
        let maps = crate::datapath::MemoryMaps::default();
        let applied = crate::plan::Applied::read(&maps).expect("empty maps read");
        Programmed { maps, applied }
    }
}

type Contents = (
    Vec<(lb_common::Frontend4Key, lb_common::FrontendValue)>,
    Vec<(u32, lb_common::Backend4)>,
    Vec<(u32, lb_common::ServiceInfo)>,
    Vec<Vec<u32>>,
);

type Served = (
    BTreeMap<lb_common::Frontend4Key, (String, u32, u32, Vec<lb_common::Backend4>)>,
    Vec<lb_common::Backend4>,
    Vec<String>,
);

fn described(info: &lb_common::ServiceInfo) -> String {
    match crate::datapath::codec::service_from_info(info) {
        Some((name, port)) => format!("{name} port {}", port.port),
        None => format!("{info:?}"),
    }
}

impl Programmed {
    fn program(&mut self, state: &DesiredState) {
        use crate::datapath::DatapathMaps;
        let plan = crate::plan::plan(state, &self.applied, self.maps.max_tables());
        crate::plan::apply(&plan, &mut self.maps, &mut self.applied).expect("applied");
        assert!(
            self.applied.index_is_consistent(self.maps.max_tables()),
            "the plan's indexes drifted from what the maps hold"
        );
    }

    /// What the planner plans for the changes alone.
    fn program_changes(
        &mut self,
        planner: &mut crate::plan::Planner,
        state: &DesiredState,
        changes: &super::Changes,
    ) {
        use crate::datapath::DatapathMaps;
        let max_tables = self.maps.max_tables();
        let plan = planner.plan(state, changes, &self.applied, max_tables);
        assert_eq!(plan.problems, [], "{plan}");
        crate::plan::apply(&plan, &mut self.maps, &mut self.applied).expect("applied");
        assert!(
            self.applied.index_is_consistent(max_tables),
            "the plan's indexes drifted from what the maps hold"
        );
    }

    /// What a packet meets, without the ids: each frontend's service entry,
    /// flags and table (as the backends its slots name), and every backend
    /// and service entry the maps hold.
    fn served(&self) -> Served {
        let maps = &self.maps;
        let frontends = maps
            .frontends
            .iter()
            .map(|(key, fe)| {
                let slots = maps.table_of(key).unwrap_or_default();
                let table = slots.iter().map(|id| maps.backends[id]).collect();
                let info = described(&maps.services[&fe.service_id]);
                (*key, (info, fe.flags, fe.backend_count, table))
            })
            .collect();
        let mut backends: Vec<_> = maps.backends.values().copied().collect();
        backends.sort_by_key(|b| (b.addr_be, b.port_be, b.proto, b.flags));
        let mut services: Vec<_> = maps.services.values().map(described).collect();
        services.sort();
        (frontends, backends, services)
    }

    /// Who serves each frontend, as `agent::sync` reads it from the maps.
    fn holders(&self) -> Holders {
        use crate::datapath::codec;
        self.applied
            .frontends
            .iter()
            .filter_map(|(key, value)| {
                let frontend = codec::frontend_from_key(key)?;
                let info = self.applied.service_infos.get(&value.service_id)?;
                Some((frontend, codec::service_from_info(info)?.0))
            })
            .collect()
    }

    /// Everything the maps hold, each frontend's table by its slots.
    fn contents(&self) -> Contents {
        use crate::datapath::DatapathMaps;
        let frontends = self.maps.frontends().expect("frontends");
        let tables = frontends
            .iter()
            .filter(|(_, fe)| fe.backend_count > 0)
            .map(|(_, fe)| self.maps.read_table(fe.table_id).expect("table"))
            .collect();
        let (backends, services) = (self.maps.backends(), self.maps.services());
        (
            frontends,
            backends.expect("backends"),
            services.expect("services"),
            tables,
        )
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn api_objects_give_the_full_computation(changes in proptest::collection::vec(change(), 1..40)) {
        check(true, false, changes, 0);
    }

    #[test]
    fn shared_api_objects_give_the_full_computation(changes in proptest::collection::vec(change(), 1..40)) {
        check(true, true, changes, 0);
    }

    #[test]
    fn manifests_give_the_full_computation(changes in proptest::collection::vec(change(), 1..40)) {
        check(false, false, changes, 0);
    }

    #[test]
    fn shared_manifests_take_the_general_path(changes in proptest::collection::vec(change(), 1..40)) {
        check(false, true, changes, 0);
    }

    #[test]
    fn resets_give_the_full_computation(changes in proptest::collection::vec(change(), 1..40)) {
        check(true, true, changes, 7);
    }
}

fn version_of(services: &[Service], slices: &[Slice], ns: &str, name: &str) -> u64 {
    inputs::group(services, slices)
        .get(ns, name)
        .expect("the group")
        .version()
}

/// kube-proxy's trackers key changes on the objects the informers hand
/// out; here the API server's resourceVersion (with the uid) says an
/// object changed, whatever else is in it.
#[test]
fn api_objects_change_with_their_resource_version() {
    let slices = [slice(0, 0, 0, &[5], 8080, Some(7))];
    let base = version_of(&[], &slices, "ns0", "s0");
    let moved = [slice(0, 0, 0, &[6], 8080, Some(7))];
    assert_eq!(
        version_of(&[], &moved, "ns0", "s0"),
        base,
        "same version, same object"
    );
    let bumped = [slice(0, 0, 0, &[5], 8080, Some(8))];
    assert_ne!(version_of(&[], &bumped, "ns0", "s0"), base);
    let mut recreated = slices[0].clone();
    recreated.metadata.uid = Some("another".into());
    assert_ne!(version_of(&[], &[recreated], "ns0", "s0"), base);
    let two = [
        slice(0, 0, 0, &[5], 8080, Some(7)),
        slice(0, 1, 0, &[6], 8080, Some(9)),
    ];
    let swapped = [two[1].clone(), two[0].clone()];
    assert_eq!(
        version_of(&[], &two, "ns0", "s0"),
        version_of(&[], &swapped, "ns0", "s0"),
        "a reflector's store has no order"
    );
}

/// Manifests carry no versions: the whole object is compared, and their
/// order counts (the first definition of a duplicate is the one used).
#[test]
fn manifests_change_with_their_content_and_order() {
    let slices = [slice(0, 0, 0, &[5], 8080, None)];
    let base = version_of(&[], &slices, "ns0", "s0");
    assert_eq!(version_of(&[], &[slices[0].clone()], "ns0", "s0"), base);
    let moved = [slice(0, 0, 0, &[6], 8080, None)];
    assert_ne!(version_of(&[], &moved, "ns0", "s0"), base);
    let two = [
        service(0, 0, 1, 80, None, None, None),
        service(0, 0, 2, 80, None, None, None),
    ];
    let swapped = [two[1].clone(), two[0].clone()];
    assert_ne!(
        version_of(&two, &[], "ns0", "s0"),
        version_of(&swapped, &[], "ns0", "s0")
    );
}

/// Slices group with the Service their label names, unlabelled ones with
/// none (the full computation ignores them too).
#[test]
fn slices_group_by_their_service_label() {
    let mut unlabelled = slice(0, 3, 0, &[5], 8080, None);
    unlabelled.service_name = None;
    let services = [service(0, 1, 1, 80, None, None, None)];
    let slices = [
        slice(0, 0, 1, &[5], 8080, None),
        slice(1, 1, 1, &[5], 8080, None),
        unlabelled,
    ];
    let groups = inputs::group(&services, &slices);
    let mut keys: Vec<_> = groups.iter().map(|(ns, name, _)| (ns, name)).collect();
    keys.sort();
    assert_eq!(keys, vec![("ns0", "s1"), ("ns1", "s1")]);
    assert_eq!(groups.get("ns0", "s1").unwrap().slices.len(), 1);
    assert_eq!(groups.get("ns0", "s1").unwrap().services.len(), 1);
}

/// The common case costs one group: one slice changes among many
/// Services that collide on nothing.
#[test]
fn one_slice_change_recomputes_one_group() {
    let services: Vec<Service> = (0..50u8).map(|i| named_service(i, Some(1))).collect();
    let mut slices: Vec<Slice> = (0..50u8).map(|i| named_slice(i, 10, Some(1))).collect();
    let node = node("node-a");
    let mut tracker = Tracker::new(Rules::default());
    tracker.update(&services, &slices, &node, &Holders::default);
    assert_eq!(
        tracker.stats(),
        UpdateStats {
            recomputed: 50,
            entangled: 0,
            full: true
        }
    );
    slices[17] = named_slice(17, 11, Some(2));
    let state = tracker.update(&services, &slices, &node, &|| {
        panic!("no group reads the holders")
    });
    assert_same(
        state,
        &oracle(&services, &slices, &node, &Holders::default()),
    );
    assert_eq!(
        tracker.stats(),
        UpdateStats {
            recomputed: 1,
            entangled: 0,
            full: false
        }
    );
    let state = tracker.update(&services, &slices, &node, &Holders::default);
    assert_eq!(state.frontends.len(), 50);
    assert_eq!(
        tracker.stats(),
        UpdateStats {
            recomputed: 0,
            entangled: 0,
            full: false
        }
    );
}

/// A Service that takes another's frontend entangles both (computed
/// together from then on); the node's facts changing recomputes all.
#[test]
fn collisions_entangle_and_node_changes_recompute_everything() {
    let mut services: Vec<Service> = (0..5u8).map(|i| named_service(i, Some(1))).collect();
    let slices: Vec<Slice> = (0..5u8).map(|i| named_slice(i, 10, Some(1))).collect();
    let mut node = node("node-a");
    let mut tracker = Tracker::new(Rules::default());
    tracker.update(&services, &slices, &node, &Holders::default);
    let mut thief = named_service(4, Some(2));
    thief.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.1".into());
    thief.spec.as_mut().unwrap().cluster_ips = None;
    services[4] = thief;
    let state = tracker.update(&services, &slices, &node, &Holders::default);
    assert_same(
        state,
        &oracle(&services, &slices, &node, &Holders::default()),
    );
    assert_eq!(
        tracker.stats(),
        UpdateStats {
            recomputed: 1,
            entangled: 2,
            full: false
        }
    );
    node.addresses = vec![Ipv4Addr::new(192, 168, 1, 99).into()];
    tracker.update(&services, &slices, &node, &Holders::default);
    assert_eq!(
        tracker.stats(),
        UpdateStats {
            recomputed: 5,
            entangled: 2,
            full: true
        }
    );
}

fn named_service(i: u8, version: Option<u32>) -> Service {
    let mut service = service(0, i, 1, 80, None, None, version);
    service.metadata.name = Some(format!("svc{i}"));
    let spec = service.spec.as_mut().unwrap();
    spec.cluster_ip = Some(format!("10.96.0.{}", i + 1));
    service
}

fn named_slice(i: u8, address: u8, version: Option<u32>) -> Slice {
    let mut slice = slice(0, i, 0, &[], 8080, version);
    slice.service_name = Some(format!("svc{i}").into());
    slice.endpoints = slice_endpoints(i, address);
    slice
}

fn slice_endpoints(i: u8, address: u8) -> Vec<SliceEndpoint> {
    let decoded: Vec<k8s_openapi::api::discovery::v1::Endpoint> = serde_json::from_value(
        json!([{"addresses": [format!("10.244.{i}.{address}")], "conditions": {"ready": true}}]),
    )
    .expect("valid endpoints");
    decoded.into_iter().map(SliceEndpoint::from).collect()
}

/// With the stores' shared objects, the objects still at their address
/// are not read again: one replaced slice among 50 Services is one group
/// recomputed, and a deleted Service is found and withdrawn.
#[test]
fn shared_objects_replaced_or_deleted_are_found_by_address() {
    let mut services: Vec<Arc<Service>> = (0..50u8)
        .map(|i| Arc::new(named_service(i, Some(1))))
        .collect();
    let mut slices: Vec<Arc<Slice>> = (0..50u8)
        .map(|i| Arc::new(named_slice(i, 10, Some(1))))
        .collect();
    let node = node("node-a");
    let mut tracker = Tracker::new(Rules::default());
    tracker.update_shared(&services, &slices, &node, &Holders::default);
    slices[17] = Arc::new(named_slice(17, 11, Some(2)));
    let state = tracker.update_shared(&services, &slices, &node, &|| {
        panic!("no group reads the holders")
    });
    assert_same(
        state,
        &oracle(&services, &slices, &node, &Holders::default()),
    );
    assert_eq!(tracker.stats().recomputed, 1);
    services.remove(3);
    let state = tracker.update_shared(&services, &slices, &node, &Holders::default);
    assert_same(
        state,
        &oracle(&services, &slices, &node, &Holders::default()),
    );
    assert_eq!(state.frontends.len(), 49);
    assert_eq!(
        tracker.stats().recomputed,
        1,
        "the slice of svc3 is still there"
    );
    assert_eq!(tracker.changes().services.len(), 1);
}

/// A case the property test found (manifests): two definitions of one
/// name, a ClusterIP freed by a port change and claimed by a newcomer.
#[test]
fn a_duplicate_definition_and_a_contested_cluster_ip_give_the_full_computation() {
    let put = |name, ip, port, age, duplicate| Change::PutService {
        ns: 0,
        name,
        ip,
        port,
        node_port: None,
        age,
        duplicate,
    };
    let changes = vec![
        put(0, 1, 80, None, false),
        put(2, 1, 80, None, false),
        put(0, 1, 81, None, false),
        put(1, 2, 80, None, false),
        put(2, 2, 80, Some(0), true),
        put(3, 1, 80, None, false),
    ];
    check(false, false, changes, 0);
}

/// Manifests (no versions) as the manifest cache hands them out, shared:
/// an object replaced in its place is found place by place and only its
/// group is recomputed; one `Arc` in two places (two identical documents)
/// replaced in one of them still serves from the other; an identical
/// replacement recomputes nothing.
#[test]
fn manifests_replaced_in_place_recompute_their_group() {
    let services: Vec<Arc<Service>> = (0..50u8)
        .map(|i| Arc::new(named_service(i, None)))
        .collect();
    let mut slices: Vec<Arc<Slice>> = (0..50u8)
        .map(|i| Arc::new(named_slice(i, 10, None)))
        .collect();
    slices.push(slices[5].clone());
    let node = node("node-a");
    let mut tracker = Tracker::new(Rules::default());
    tracker.update_shared(&services, &slices, &node, &Holders::default);
    slices[17] = Arc::new(named_slice(17, 11, None));
    let state = tracker.update_shared(&services, &slices, &node, &Holders::default);
    assert_same(
        state,
        &oracle(&services, &slices, &node, &Holders::default()),
    );
    assert_eq!(tracker.stats().recomputed, 1);
    slices[5] = Arc::new(named_slice(5, 12, None));
    let state = tracker.update_shared(&services, &slices, &node, &Holders::default);
    assert_same(
        state,
        &oracle(&services, &slices, &node, &Holders::default()),
    );
    assert_eq!(tracker.stats().recomputed, 1);
    slices[17] = Arc::new(named_slice(17, 11, None));
    let state = tracker.update_shared(&services, &slices, &node, &Holders::default);
    assert_same(
        state,
        &oracle(&services, &slices, &node, &Holders::default()),
    );
    assert_eq!(tracker.stats().recomputed, 0);
}
