//! Every endpoint a Service port's EndpointSlices list holds a backend id
//! (issue 11: "a hit whose backend is gone ... never sent to an address
//! that may now be someone else's pod; terminating backends keep their
//! established flows until they are removed"), while the tables hold only
//! the chosen ones; and the UDP purge follows kube-proxy's conntrack
//! cleanup (pkg/proxy/conntrack/cleanup.go): a port's flows to an endpoint
//! that is no longer one of its serving endpoints.

use std::collections::BTreeSet;

use super::*;
use crate::{
    datapath::codec::{BackendFlags, backend_value},
    desired::incremental::Changes,
    model::Listed,
};

const TABLES: u32 = 8;

/// `entries`, with `name`'s port listing `listed` (backend, serving).
fn listing(mut state: DesiredState, name: &str, listed: &[(Backend, bool)]) -> DesiredState {
    let port = state
        .services
        .iter_mut()
        .find(|(service, _)| service.name == name)
        .expect("the port");
    let mut listed: Vec<Listed> = listed
        .iter()
        .map(|(backend, serving)| Listed {
            backend: *backend,
            serving: *serving,
        })
        .collect();
    listed.sort();
    port.1.listed = listed;
    state
}

fn held(maps: &MemoryMaps) -> BTreeSet<Backend> {
    maps.backends
        .values()
        .filter_map(backend_from_value)
        .collect()
}

fn in_tables(maps: &MemoryMaps) -> BTreeSet<Backend> {
    maps.tables
        .values()
        .flatten()
        .map(|id| backend_from_value(&maps.backends[id]).expect("a known backend"))
        .collect()
}

struct Agent {
    maps: MemoryMaps,
    applied: Applied,
    planner: Planner,
}

impl Agent {
    fn new() -> Agent {
        Agent {
            maps: MemoryMaps::new(TABLES),
            applied: Applied::default(),
            planner: Planner::new(),
        }
    }

    fn sync(&mut self, state: &DesiredState) -> Plan {
        let plan = self
            .planner
            .plan(state, &Changes::all(), &self.applied, TABLES);
        assert_eq!(plan.problems, [], "{plan}");
        apply(&plan, &mut self.maps, &mut self.applied).expect("apply");
        plan
    }

    fn id_of(&self, name: &str) -> u32 {
        let found = self.applied.services.iter().find(|(s, _)| s.name == name);
        *found.expect("an id").1
    }
}

fn value(backend: Backend) -> lb_common::Backend4 {
    backend_value(&backend, BackendFlags::default()).unwrap()
}

#[test]
fn listed_endpoints_not_chosen_hold_backend_ids_outside_the_tables() {
    let (ready, draining, unready) = (
        backend(11, Protocol::Tcp),
        backend(12, Protocol::Tcp),
        backend(13, Protocol::Tcp),
    );
    let state = desired(&[(frontend(80, Scope::Internal), spec("web", &[ready]))]);
    let state = listing(
        state,
        "web",
        &[(ready, true), (draining, true), (unready, false)],
    );
    let mut agent = Agent::new();
    agent.sync(&state);
    assert_eq!(
        held(&agent.maps),
        BTreeSet::from([ready, draining, unready])
    );
    assert_eq!(in_tables(&agent.maps), BTreeSet::from([ready]));
    // No frontend selects the listed-only ones: no flag of a chosen use.
    let draining_value = agent
        .maps
        .backends
        .values()
        .find(|v| backend_from_value(v) == Some(draining));
    assert_eq!(draining_value.copied(), Some(value(draining)));
}

#[test]
fn a_backend_goes_only_when_no_service_port_lists_it() {
    let (a, b) = (backend(11, Protocol::Tcp), backend(12, Protocol::Tcp));
    let both = |web: &[(Backend, bool)], api: &[(Backend, bool)]| {
        let state = desired(&[
            (frontend(80, Scope::Internal), spec("web", &[a])),
            (frontend(81, Scope::Internal), spec("api", &[a])),
        ]);
        listing(listing(state, "web", web), "api", api)
    };
    let mut agent = Agent::new();
    agent.sync(&both(&[(a, true), (b, true)], &[(a, true), (b, false)]));
    assert_eq!(held(&agent.maps), BTreeSet::from([a, b]));
    // Gone from web's slices, still in api's: kept.
    let plan = agent.sync(&both(&[(a, true)], &[(a, true), (b, false)]));
    assert!(plan.remove_backends.is_empty(), "{plan}");
    assert_eq!(held(&agent.maps), BTreeSet::from([a, b]));
    // Gone from every slice: removed.
    let plan = agent.sync(&both(&[(a, true)], &[(a, true)]));
    let removed: Vec<_> = plan
        .remove_backends
        .iter()
        .map(|(_, v)| backend_from_value(v))
        .collect();
    assert_eq!(removed, [Some(b)]);
    assert_eq!(held(&agent.maps), BTreeSet::from([a]));
}

#[test]
fn max_backends_counts_listed_endpoints() {
    let (a, b) = (backend(11, Protocol::Tcp), backend(12, Protocol::Tcp));
    let state = desired(&[(frontend(80, Scope::Internal), spec("web", &[a]))]);
    let state = listing(state, "web", &[(a, true), (b, false)]);
    let mut maps = MemoryMaps::new(TABLES);
    maps.max_backends = 1;
    let applied = Applied::read(&maps).unwrap();
    let plan = plan(&state, &applied, TABLES);
    assert_eq!(plan.problems.len(), 1, "{plan}");
    assert!(plan.problems[0].reason.contains("--max-backends"), "{plan}");
}

/// cleanup.go: "We map all the serving endpoint IPs to the service and
/// clear all the conntrack entries which are destined for the service and
/// are not DNATed to these endpoints", per Service: a backend that stops
/// serving one UDP port keeps the flows of another port that still has it.
#[test]
fn the_udp_purge_is_per_service_port_and_follows_the_serving_endpoints() {
    let (u1, u2) = (backend(11, Protocol::Udp), backend(12, Protocol::Udp));
    let two = |dns: &[(Backend, bool)], logs: &[(Backend, bool)]| {
        let chosen = |l: &[(Backend, bool)]| -> Vec<Backend> {
            l.iter().filter(|(_, s)| *s).map(|(b, _)| *b).collect()
        };
        let state = desired(&[
            (udp_frontend(53), udp_spec("dns", &chosen(dns))),
            (udp_frontend(514), udp_spec("logs", &chosen(logs))),
        ]);
        listing(listing(state, "dns", dns), "logs", logs)
    };
    let mut agent = Agent::new();
    agent.sync(&two(&[(u1, true), (u2, true)], &[(u1, true), (u2, true)]));
    // u2 stops serving dns (still listed: not serving, terminating): dns's
    // flows to it go, logs' stay, and the backend stays for both.
    let plan = agent.sync(&two(&[(u1, true), (u2, false)], &[(u1, true), (u2, true)]));
    assert_eq!(plan.purge_connections, [(agent.id_of("dns"), value(u2))]);
    assert!(plan.remove_backends.is_empty(), "{plan}");
    // Removed from dns's slices too: nothing more to purge for dns.
    let plan = agent.sync(&two(&[(u1, true)], &[(u1, true), (u2, true)]));
    assert_eq!(plan.purge_connections, []);
    // "a Service without endpoints does not require to clean the conntrack
    // entries": logs loses every serving endpoint, its flows stay.
    let plan = agent.sync(&two(&[(u1, true)], &[(u1, false), (u2, false)]));
    assert_eq!(plan.purge_connections, []);
}

/// cleanup.go: "we are only interested in UDP services".
#[test]
fn tcp_ports_purge_nothing() {
    let (t1, t2) = (backend(21, Protocol::Tcp), backend(22, Protocol::Tcp));
    let mut agent = Agent::new();
    agent.sync(&desired(&[(
        frontend(80, Scope::Internal),
        spec("web", &[t1, t2]),
    )]));
    let plan = agent.sync(&desired(&[(
        frontend(80, Scope::Internal),
        spec("web", &[t1]),
    )]));
    assert_eq!(plan.purge_connections, []);
    assert_eq!(plan.remove_backends.len(), 1);
}

/// cleanup.go reconciles with what conntrack holds, whatever happened
/// before: a restarted agent's first plan (no earlier listing known)
/// purges a UDP port's flows to the backends its live tables still name
/// that are no serving endpoint of it now.
#[test]
fn a_restarted_agent_purges_what_the_maps_still_select_and_no_longer_serves() {
    let (u1, u2) = (backend(11, Protocol::Udp), backend(12, Protocol::Udp));
    let dns = |bs: &[Backend]| desired(&[(udp_frontend(53), udp_spec("dns", bs))]);
    let mut agent = Agent::new();
    agent.sync(&dns(&[u1, u2]));
    agent.planner = Planner::new();
    let plan = agent.sync(&dns(&[u1]));
    assert_eq!(plan.purge_connections, [(agent.id_of("dns"), value(u2))]);
    // Nothing more once it knows the listing.
    let plan = agent.sync(&dns(&[u1]));
    assert_eq!(plan.purge_connections, []);
}
