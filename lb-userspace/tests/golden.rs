//! Golden plans: each fixture in `tests/fixtures` goes through the whole
//! control path (manifests -> desired state -> plan against an empty
//! in-memory datapath) and its printed form, as `lb agent --dry-run` prints
//! it, must equal `tests/golden/<fixture>.plan`.
//!
//! After a deliberate change, regenerate and review the diff:
//! `LB_UPDATE_GOLDEN=1 cargo test -p lb-userspace --test golden`.

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use lb::{
    datapath::{DatapathMaps, MemoryMaps},
    desired,
    model::NodeFacts,
    plan::{self, Applied},
    source::manifests,
};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

fn fixtures() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir("fixtures"))
        .expect("tests/fixtures exists")
        .map(|entry| entry.expect("readable fixture directory").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no fixtures found");
    paths
}

/// The node the desired-state tests use.
fn node() -> NodeFacts {
    NodeFacts {
        name: "node-a".to_owned(),
        addresses: vec![Ipv4Addr::new(192, 168, 1, 10).into()],
        zone: Some("zone-a".to_owned()),
    }
}

/// The dry run's output for one fixture: what was skipped, then the plan.
fn render(fixture: &Path) -> String {
    render_with(fixture, |set| {
        desired::compute(
            &set.services,
            &set.slices,
            &node(),
            &desired::Rules::default(),
            &desired::Holders::default(),
        )
    })
}

/// The desired state the incremental tracker reaches when the fixture's
/// objects arrive one at a time (a watch's events), in file order.
fn incrementally(set: &manifests::ManifestSet) -> lb::model::DesiredState {
    let mut tracker = desired::incremental::Tracker::new(desired::Rules::default());
    let objects = set.services.len() + set.slices.len();
    for arrived in 0..=objects {
        let services = &set.services[..arrived.min(set.services.len())];
        let slices = &set.slices[..arrived.saturating_sub(set.services.len())];
        tracker.update(services, slices, &node(), &desired::Holders::default);
    }
    tracker
        .update(
            &set.services,
            &set.slices,
            &node(),
            &desired::Holders::default,
        )
        .clone()
}

fn render_with(
    fixture: &Path,
    state_of: impl Fn(&manifests::ManifestSet) -> lb::model::DesiredState,
) -> String {
    let name = fixture.file_name().unwrap().to_string_lossy();
    let text = std::fs::read_to_string(fixture).expect("fixture is readable");
    let set = manifests::parse_documents(&name, &text);
    let state = state_of(&set);
    let maps = MemoryMaps::default();
    let applied = Applied::read(&maps).expect("empty maps read");
    let plan = plan::plan(&state, &applied, maps.max_tables());
    let mut out = String::new();
    for problem in set
        .problems
        .iter()
        .chain(&state.problems)
        .chain(&plan.problems)
    {
        writeln!(out, "skipped: {problem}").unwrap();
    }
    write!(out, "{plan}").unwrap();
    out
}

fn golden_path(fixture: &Path) -> PathBuf {
    let stem = fixture.file_stem().unwrap().to_string_lossy();
    dir("golden").join(format!("{stem}.plan"))
}

#[test]
fn golden_plans() {
    let update = std::env::var_os("LB_UPDATE_GOLDEN").is_some();
    let mut mismatched = Vec::new();
    for fixture in fixtures() {
        let actual = render(&fixture);
        let path = golden_path(&fixture);
        if update {
            std::fs::create_dir_all(dir("golden")).unwrap();
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|err| {
            panic!(
                "{}: {err}: generate it with LB_UPDATE_GOLDEN=1 cargo test -p lb-userspace --test golden",
                path.display()
            )
        });
        if actual != expected {
            mismatched.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                path.display()
            ));
        }
    }
    assert!(
        mismatched.is_empty(),
        "plans differ from their goldens (if deliberate, regenerate with LB_UPDATE_GOLDEN=1 and review the diff):\n{}",
        mismatched.join("\n")
    );
}

/// Every golden has a fixture: a renamed or deleted fixture leaves no
/// stale golden behind.
#[test]
fn every_golden_has_a_fixture() {
    let wanted: Vec<PathBuf> = fixtures().iter().map(|f| golden_path(f)).collect();
    for entry in std::fs::read_dir(dir("golden")).expect("tests/golden exists") {
        let path = entry.unwrap().path();
        assert!(wanted.contains(&path), "{} has no fixture", path.display());
    }
}

/// A plan depends only on its inputs: rendering again (new hash map seeds,
/// new allocations) gives the same bytes.
#[test]
fn golden_plans_are_deterministic() {
    for fixture in fixtures() {
        let first = render(&fixture);
        for _ in 0..3 {
            assert_eq!(render(&fixture), first, "{}", fixture.display());
        }
    }
}

/// The skipped lines as a set (the tracker lists problems per Service,
/// the full computation slices first), the plan as it is.
fn problems_as_a_set(rendered: &str) -> (Vec<&str>, Vec<&str>) {
    let (mut skipped, plan): (Vec<&str>, Vec<&str>) = rendered
        .lines()
        .partition(|line| line.starts_with("skipped: "));
    skipped.sort();
    (skipped, plan)
}

/// The incremental tracker, fed each fixture's objects one by one, gives
/// the golden plan: the same desired state as the full computation.
#[test]
fn incremental_states_give_the_golden_plans() {
    for fixture in fixtures() {
        let expected = std::fs::read_to_string(golden_path(&fixture)).expect("golden exists");
        let actual = render_with(&fixture, incrementally);
        assert_eq!(
            problems_as_a_set(&actual),
            problems_as_a_set(&expected),
            "{}",
            fixture.display()
        );
    }
}
