//! The backend capacity chosen at load (`--max-backends`), in the real
//! maps and programs: a small one refuses the backend past it as a
//! counted problem of the plan (the Service port that needs it is not
//! served, the others are), the default one holds ids far above the
//! 65,536 of the version before and the datapath serves them (the
//! least-connections count of such an id included), a pinned datapath is
//! adopted at its size without the flag and refused with what to do next
//! with another size, and the kernel memory each size costs (printed for
//! README, `--nocapture`).

mod common;

use std::net::Ipv4Addr;

use aya::maps::MapData;
use common::*;
use lb::{
    datapath::{DatapathMaps as _, LoadOptions, object::LoadError},
    model::ProblemCode,
    plan::Applied,
};
use lb_common::{
    BACKENDS4, DEFAULT_MAX_BACKENDS, FE_KIND_NODE_PORT, FE_KIND_SHIFT, PROTO_TCP, SCOPE_EXTERNAL,
    algorithm::{ALGORITHM_LEAST_CONNECTIONS, BACKEND_CONNECTIONS, FE_ALGORITHM_SHIFT},
};

const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);

fn load(max_backends: Option<u32>) -> anyhow::Result<TestDatapath> {
    ensure_bpffs();
    let pin_dir = std::path::Path::new("/sys/fs/bpf").join(unique_name());
    load_at(pin_dir, max_backends)
}

fn load_at(pin_dir: std::path::PathBuf, max_backends: Option<u32>) -> anyhow::Result<TestDatapath> {
    TestDatapath::load_at_with(
        pin_dir,
        LoadOptions {
            max_tables: 8,
            ct_entries: 4096,
            max_backends,
            ..LoadOptions::default()
        },
    )
}

/// A NodePort Service `name` on `node_port` over pods 10.247.0.`pods`.
fn service(name: &str, ip: u8, node_port: u16, pods: &[u8]) -> String {
    let endpoints: Vec<String> = pods
        .iter()
        .map(|i| format!("{{addresses: [10.247.0.{i}], nodeName: node-a}}"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: lb}}\nspec: {{type: NodePort, clusterIP: 10.96.0.{ip}, ports: [{{name: http, port: 80, targetPort: 8080, nodePort: {node_port}}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: lb, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{}]\n---\n",
        endpoints.join(", ")
    )
}

/// The plan of `yaml` against `applied`, applied; returns its problems.
fn plan_and_apply(
    t: &mut TestDatapath,
    applied: &mut Applied,
    yaml: &str,
) -> Vec<lb::model::Problem> {
    let (problems, plan) = apply_manifests(&mut t.maps, applied, yaml, NODE);
    assert_eq!(problems, vec![]);
    plan.problems
}

fn syn(t: &TestDatapath, port: u16, sport: u16) -> Option<Ipv4Addr> {
    let (action, out) = t.run_xdp(&tcp_frame(CLIENT, sport, NODE, port, true, b""));
    (action == XDP_PASS).then(|| check_frame(&out).dst)
}

/// `--max-backends 4`: four backends fit; a fifth (another Service's
/// endpoint) is refused as a `map-full` problem naming the flag, the
/// Service that needed it is not served while the first still is, and
/// once the first gives backends up the second is planned.
#[test]
fn a_small_capacity_refuses_the_backend_past_it_as_a_counted_problem() {
    let mut t = load(Some(4)).unwrap();
    assert_eq!(t.maps.max_backends(), 4);
    let mut applied = Applied::read(&t.maps).unwrap();
    let first = service("first", 181, 30720, &[1, 2, 3, 4]);
    assert_eq!(plan_and_apply(&mut t, &mut applied, &first), vec![]);
    let both = format!("{first}{}", service("second", 182, 30721, &[9]));
    let problems = plan_and_apply(&mut t, &mut applied, &both);
    let [problem] = problems.as_slice() else {
        panic!("{problems:?}")
    };
    assert_eq!(problem.code, ProblemCode::MapFull);
    assert_eq!(problem.object, "Service lb/second");
    assert!(
        problem
            .reason
            .contains("all 4 backend ids are in use (--max-backends"),
        "{problem}"
    );
    assert_eq!(t.maps.backends().unwrap().len(), 4);
    assert!(syn(&t, 30720, 50_000).is_some(), "first is served");
    assert_eq!(
        syn(&t, 30721, 50_001),
        Some(NODE),
        "second is not (no frontend: passed untranslated)"
    );
    // first shrinks to three: the fourth id comes free once that plan is
    // applied, and the next plan gives it to second.
    let shrunk = format!(
        "{}{}",
        service("first", 181, 30720, &[1, 2, 3]),
        service("second", 182, 30721, &[9])
    );
    assert_eq!(plan_and_apply(&mut t, &mut applied, &shrunk).len(), 1);
    assert_eq!(plan_and_apply(&mut t, &mut applied, &shrunk), vec![]);
    assert_eq!(syn(&t, 30721, 50_002), Some(Ipv4Addr::new(10, 247, 0, 9)));
}

/// The default capacity: a backend id above 65,536 (the fixed size of
/// the version before) is held and served, and least-connections counts
/// its connection at its index.
#[test]
fn the_default_capacity_serves_a_backend_id_above_65536() {
    let mut t = load(None).unwrap();
    assert_eq!(t.maps.max_backends(), DEFAULT_MAX_BACKENDS);
    let id = 1_000_000;
    let pod = Ipv4Addr::new(10, 247, 1, 1);
    let flags = FE_KIND_NODE_PORT << FE_KIND_SHIFT
        | u32::from(ALGORITHM_LEAST_CONNECTIONS) << FE_ALGORITHM_SHIFT;
    install_service(
        &mut t.maps,
        frontend_key(NODE, 30722, PROTO_TCP, SCOPE_EXTERNAL),
        1,
        0,
        flags,
        &[(id, backend(pod, 8080, PROTO_TCP))],
    );
    assert_eq!(syn(&t, 30722, 51_000), Some(pod));
    assert_eq!(t.maps.backend_connections(id).unwrap(), 1);
    // The planner hands out ids up to the capacity too.
    let mut applied = Applied::read(&t.maps).unwrap();
    let yaml = service("planned", 183, 30723, &[7]);
    assert_eq!(plan_and_apply(&mut t, &mut applied, &yaml), vec![]);
    assert_eq!(syn(&t, 30723, 51_001), Some(Ipv4Addr::new(10, 247, 0, 7)));
}

/// A pinned datapath keeps its size: loaded again without the flag it is
/// adopted at its size (as an upgrade from the fixed 65,536 is), with the
/// same size it loads, with another the load is refused with the sizes and
/// what to do next.
#[test]
fn a_pinned_capacity_is_adopted_and_another_is_refused_with_what_to_do() {
    let mut first = load(Some(16)).unwrap();
    let pin_dir = first.pin_dir.clone();
    // The agent goes; its pins stay (each TestDatapath removes them when
    // dropped, at the end).
    drop(first.dp.take());
    let mut again = load_at(pin_dir.clone(), None).unwrap();
    assert_eq!(again.maps.max_backends(), 16, "adopted without the flag");
    drop(again.dp.take());
    let mut same = load_at(pin_dir.clone(), Some(16)).unwrap();
    assert_eq!(same.maps.max_backends(), 16, "the same size loads");
    drop(same.dp.take());
    let err = lb::datapath::Datapath::load(&LoadOptions {
        pin_dir: Some(pin_dir.clone()),
        max_tables: 8,
        ct_entries: 4096,
        max_backends: Some(1_048_576),
        ..LoadOptions::default()
    })
    .unwrap_err();
    let load_error = err.downcast_ref::<LoadError>().expect("a LoadError");
    let msg = load_error.to_string();
    assert!(msg.contains("holds 16 backends"), "{msg}");
    assert!(
        msg.contains("--max-backends 1048576 was asked for"),
        "{msg}"
    );
    assert!(msg.contains("start without --max-backends"), "{msg}");
    assert!(msg.contains("lb cleanup --pin-dir"), "{msg}");
    assert!(
        pin_dir.join(BACKENDS4).exists(),
        "the refusal changed nothing"
    );
}

/// What the two backend maps cost at the default size and at a small one:
/// both are allocated whole at load (the hash preallocates its elements).
#[test]
fn the_backend_maps_cost_kernel_memory_by_capacity() {
    let mut figures = Vec::new();
    for capacity in [65_536u32, DEFAULT_MAX_BACKENDS] {
        let t = load(Some(capacity)).unwrap();
        let pinned = |name| MapData::from_pin(t.pin_dir.join(name)).unwrap();
        let backends = memlock(&pinned(BACKENDS4));
        let connections = memlock(&pinned(BACKEND_CONNECTIONS));
        let per_backend = (backends + connections) / u64::from(capacity);
        assert!(
            (12..=256).contains(&per_backend),
            "{capacity}: {per_backend} bytes each"
        );
        figures.push((capacity, backends, connections, per_backend));
    }
    eprintln!(
        "backend maps memlock (capacity, lb_be4_v1, lb_be_conns_v1, bytes per backend): {figures:?}"
    );
}
