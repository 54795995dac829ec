//! The corpus: every `tests/corpus/desired-*.yaml` holds one bad object and
//! says on its first line what it must cause (`# expect: <code> <part of
//! the reason>`). Each runs next to the good Service of
//! `tests/corpus/good/service.yaml`, which was serving before (its
//! frontends are the current holders), and must leave the good Service's
//! frontends and endpoints exactly as they are without it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use super::{Cidr, Holders, Rules, compute};
use crate::{
    model::{DesiredState, Frontend, FrontendSpec, NodeFacts, Problem, ProblemCode},
    source::manifests::{ManifestSet, parse_documents},
};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// The settings the corpus header of the good Service names.
fn rules() -> Rules {
    let cidr = |text: &str| text.parse::<Cidr>().expect("corpus CIDR");
    Rules {
        service_cidrs: vec![cidr("10.96.0.0/12")],
        allowed_external_ip_cidrs: vec![cidr("198.51.100.0/24"), cidr("192.168.1.0/24")],
        ..Rules::default()
    }
}

fn node() -> NodeFacts {
    NodeFacts {
        name: "node-a".to_owned(),
        addresses: vec!["192.168.1.10".parse().expect("node address")],
        zone: Some("zone-a".to_owned()),
    }
}

fn load(path: &Path) -> (String, ManifestSet) {
    let text = std::fs::read_to_string(path).expect("corpus file is readable");
    let name = path
        .file_name()
        .expect("a file")
        .to_string_lossy()
        .into_owned();
    let set = parse_documents(&name, &text);
    (text, set)
}

fn good_frontends(state: &DesiredState) -> BTreeMap<Frontend, FrontendSpec> {
    state
        .frontends
        .iter()
        .filter(|(_, spec)| spec.service.namespace == "default" && spec.service.name == "good")
        .map(|(frontend, spec)| (*frontend, spec.clone()))
        .collect()
}

/// `# expect: <code> <substring>`.
fn expectation(file: &str, text: &str) -> (ProblemCode, String) {
    let header = text
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{file}: the first line is not `# expect: <code> <reason>`"));
    let (code, reason) = header
        .split_once(' ')
        .unwrap_or_else(|| panic!("{file}: `# expect:` names no reason"));
    let code = ProblemCode::from_str_code(code)
        .unwrap_or_else(|| panic!("{file}: \"{code}\" is no ProblemCode"));
    (code, reason.trim().to_owned())
}

#[test]
fn every_bad_object_is_a_named_problem_and_leaves_the_good_service_alone() {
    let (_, good) = load(&corpus_dir().join("good/service.yaml"));
    assert_eq!(good.problems, vec![], "the good Service loads cleanly");
    let (rules, node) = (rules(), node());
    let before = compute(
        &good.services,
        &good.slices,
        &node,
        &rules,
        &Holders::default(),
    );
    assert_eq!(
        before.problems,
        vec![],
        "the good Service alone has no problem"
    );
    // ClusterIP (internal); NodePort, load balancer IP, externalIP (both scopes).
    assert_eq!(before.frontends.len(), 7, "every kind of frontend");
    let holders: Holders = before
        .frontends
        .iter()
        .map(|(frontend, spec)| (*frontend, spec.service.clone()))
        .collect();

    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("the corpus directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("desired-") && n.ends_with(".yaml"))
        })
        .collect();
    files.sort();
    assert!(files.len() >= 50, "the corpus holds {} cases", files.len());
    let mut codes = BTreeSet::new();
    for path in &files {
        let (text, bad) = load(path);
        let file = path.file_name().unwrap().to_string_lossy();
        let (code, reason) = expectation(&file, &text);
        assert_eq!(bad.problems, vec![], "{file}: the source reads it");
        assert_eq!(
            bad.services.len() + bad.slices.len(),
            1,
            "{file}: one bad object"
        );
        // The bad object first: as a file that sorts before the good one.
        let services = [bad.services.clone(), good.services.clone()].concat();
        let slices = [bad.slices.clone(), good.slices.clone()].concat();
        let after = compute(&services, &slices, &node, &rules, &holders);
        let found = after
            .problems
            .iter()
            .any(|p: &Problem| p.code == code && p.reason.contains(&reason));
        assert!(
            found,
            "{file}: expected {code} \"{reason}\", got {:#?}",
            after.problems
        );
        assert_eq!(
            good_frontends(&after),
            before.frontends,
            "{file}: the good Service's frontends and endpoints changed"
        );
        codes.insert(code);
    }
    let desired_codes = [
        ProblemCode::Conflict,
        ProblemCode::DuplicateObject,
        ProblemCode::ReservedAddress,
        ProblemCode::OutsideServiceCidr,
        ProblemCode::EndpointIsClusterIp,
        ProblemCode::ExternalIpNotAllowed,
        ProblemCode::ExternalIpIsNodeAddress,
        ProblemCode::InvalidAddress,
        ProblemCode::NodePortOutOfRange,
        ProblemCode::PortOutOfRange,
        ProblemCode::DuplicatePort,
        ProblemCode::UnknownProtocol,
        ProblemCode::NameTooLong,
        ProblemCode::MissingField,
        ProblemCode::InvalidValue,
        ProblemCode::IgnoredField,
    ];
    for code in desired_codes {
        assert!(codes.contains(&code), "no corpus case for {code}");
    }
}
