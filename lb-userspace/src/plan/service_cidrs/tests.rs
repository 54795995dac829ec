//! The allocated-ClusterIP and service-CIDR writes of a plan: the set
//! follows the ClusterIP frontends (kube-proxy's `cluster-ips` set: every
//! Service's ClusterIP, with or without endpoints), in the whole plan and
//! in the plan of the changed ports alike, and only ClusterIPs count.

use std::{collections::BTreeSet, net::Ipv4Addr};

use crate::{
    datapath::{DatapathMaps, MemoryMaps},
    desired::incremental::Changes,
    model::{DesiredState, FrontendKind, Protocol, Scope, SourceRange},
    plan::{
        Applied, Planner, apply,
        tests::{backend, desired, frontend, spec},
    },
};

/// The address `tests::frontend` puts every frontend on.
fn frontend_addr() -> Ipv4Addr {
    match frontend(80, Scope::Internal).addr {
        std::net::IpAddr::V4(addr) => addr,
        other => panic!("{other}"),
    }
}

fn changes_of(before: &DesiredState, after: &DesiredState) -> Changes {
    let mut changes = Changes::default();
    for (fe, spec) in after.frontends.iter().chain(&before.frontends) {
        if before.frontends.get(fe) != after.frontends.get(fe) {
            changes.frontends.insert(*fe);
            changes.services.insert(spec.service.clone());
        }
    }
    changes
}

/// Plans and applies `steps` in turn with both planners (whole and
/// scoped), returning what the cluster-IP set holds after each.
fn cluster_ips_after(steps: &[DesiredState]) -> Vec<Vec<Ipv4Addr>> {
    let mut seen = Vec::new();
    for scoped in [false, true] {
        let (mut maps, mut applied, mut planner) =
            (MemoryMaps::new(8), Applied::default(), Planner::new());
        let mut before = DesiredState::default();
        let mut held = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let changes = if scoped && i > 0 {
                changes_of(&before, step)
            } else {
                Changes {
                    all: true,
                    ..Changes::default()
                }
            };
            let plan = planner.plan(step, &changes, &applied, maps.max_tables());
            apply(&plan, &mut maps, &mut applied).unwrap();
            held.push(maps.cluster_ips().unwrap());
            before = step.clone();
        }
        seen.push(held);
    }
    assert_eq!(seen[0], seen[1], "the whole and the scoped plans agree");
    seen.remove(0)
}

/// A ClusterIP is allocated while any of its ports is served, with or
/// without endpoints, and released when its last port goes.
#[test]
fn the_set_follows_the_cluster_ip_frontends() {
    let web = spec("web", &[backend(1, Protocol::Tcp)]);
    let mut empty = spec("empty", &[]);
    empty.service.port_name = "other".into();
    let one = desired(&[(frontend(80, Scope::Internal), web.clone())]);
    let two = desired(&[
        (frontend(80, Scope::Internal), web.clone()),
        (frontend(81, Scope::Internal), empty.clone()),
    ]);
    let only_empty = desired(&[(frontend(81, Scope::Internal), empty)]);
    let none = DesiredState::default();
    let addr = frontend_addr();
    assert_eq!(
        cluster_ips_after(&[one, two, only_empty, none]),
        [vec![addr], vec![addr], vec![addr], vec![]]
    );
}

/// Only ClusterIPs are in kube-proxy's set: an externalIP's or a
/// LoadBalancer IP's other ports are not rejected.
#[test]
fn other_frontend_kinds_allocate_nothing() {
    let mut external = spec("ext", &[backend(1, Protocol::Tcp)]);
    external.kind = FrontendKind::ExternalIp;
    let mut lb = spec("lb", &[backend(2, Protocol::Tcp)]);
    lb.kind = FrontendKind::LoadBalancer;
    lb.service.port_name = "lb".into();
    let state = desired(&[
        (frontend(80, Scope::Internal), external),
        (frontend(81, Scope::External), lb),
    ]);
    assert_eq!(cluster_ips_after(&[state]), [Vec::<Ipv4Addr>::new()]);
}

/// The trie holds the planner's CIDRs: written by the first plan, nothing
/// more once there, and a CIDR the maps hold that the agent was not
/// started with is removed.
#[test]
fn the_service_cidrs_are_the_planners() {
    let cidr = |s: &str| {
        let (net, len) = s.split_once('/').unwrap();
        SourceRange::new(net.parse().unwrap(), len.parse().unwrap()).unwrap()
    };
    let mut maps = MemoryMaps::new(8);
    maps.set_service_cidr(&cidr("10.0.0.0/8")).unwrap();
    let mut applied = Applied::read(&maps).unwrap();
    let wanted: BTreeSet<_> = [cidr("10.96.0.0/12"), cidr("10.112.0.0/16")].into();
    let mut planner = Planner::with_service_cidrs(wanted.clone());
    let all = Changes {
        all: true,
        ..Changes::default()
    };
    let state = DesiredState::default();
    let plan = planner.plan(&state, &all, &applied, 8);
    assert_eq!(plan.remove_service_cidrs, [cidr("10.0.0.0/8")]);
    apply(&plan, &mut maps, &mut applied).unwrap();
    assert_eq!(
        maps.service_cidrs().unwrap(),
        wanted.iter().copied().collect::<Vec<_>>()
    );
    let again = planner.plan(&state, &Changes::default(), &applied, 8);
    assert!(again.set_service_cidrs.is_empty() && again.remove_service_cidrs.is_empty());
    assert!(again.is_empty(), "{again}");
}
