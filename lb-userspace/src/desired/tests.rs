//! Tests of `compute` as a whole: input order, duplicates, every fixture at once.

use super::test_support::*;

#[test]
fn malformed_document_does_not_hide_the_others() {
    let set = fixture("malformed.yaml");
    assert_eq!(set.problems.len(), 1);
    assert_eq!(set.problems[0].object, "malformed.yaml (document 2)");
    assert!(
        set.problems[0].reason.starts_with("invalid YAML: "),
        "{}",
        set.problems[0].reason
    );
    let state = compute(&set.services, &set.slices, &node("node-a"));
    let addrs: Vec<String> = state.frontends.keys().map(|f| f.to_string()).collect();
    assert_eq!(addrs, vec!["10.96.0.100:80/TCP", "10.96.0.102:80/TCP"]);
}

#[test]
fn duplicate_service_definition_is_a_problem() {
    let mut set = fixture("clusterip.yaml");
    let first = set.services[0].clone();
    set.services.push(first);
    let state = compute(&set.services, &set.slices, &node("node-a"));
    assert_eq!(
        state.problems,
        vec![error(
            ProblemCode::DuplicateObject,
            "Service shop/web",
            "defined more than once; the first definition is used"
        )]
    );
    assert_eq!(state.frontends.len(), 1);
}

#[test]
fn independent_of_input_order() {
    let set = load_dir(&fixtures_dir()).expect("the fixture directory is readable");
    let facts = node("node-a");
    let forward = compute(&set.services, &set.slices, &facts);
    let mut services = set.services.clone();
    let mut slices = set.slices.clone();
    services.reverse();
    slices.reverse();
    assert_eq!(compute(&services, &slices, &facts), forward);
}

/// The whole fixture directory at once: the fixtures use distinct
/// namespaces and addresses, so only their deliberate problems appear.
#[test]
fn whole_fixture_directory() {
    let set = load_dir(&fixtures_dir()).expect("the fixture directory is readable");
    let load_problems: Vec<&str> = set.problems.iter().map(|p| p.object.as_str()).collect();
    assert_eq!(load_problems, vec!["malformed.yaml (document 2)"]);
    let state = compute(&set.services, &set.slices, &node("node-a"));
    let objects: BTreeSet<&str> = state.problems.iter().map(|p| p.object.as_str()).collect();
    assert_eq!(
        objects,
        BTreeSet::from([
            "Service conflict/b",
            "Service invalid/nospec",
            "Service invalid/typo",
            "Service lb/guarded"
        ])
    );
    assert_eq!(state.frontends.len(), 58);
}

/// A pod's name is one allocation however many frontends list the pod:
/// every frontend's endpoint shares the slice's own.
#[test]
fn endpoint_targets_are_shared_with_the_slice() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: app}\n\
         spec:\n  type: NodePort\n  clusterIP: 10.96.0.10\n  ports: [{name: http, port: 80, nodePort: 30080}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: web-1, namespace: app, labels: {kubernetes.io/service-name: web}}\n\
         addressType: IPv4\nports: [{name: http, port: 8080}]\n\
         endpoints: [{addresses: [10.0.0.1], targetRef: {kind: Pod, name: web-abc}}]\n";
    let set = crate::source::manifests::parse_documents("web.yaml", text);
    let state = compute(&set.services, &set.slices, &node("node-a"));
    let kept = set.slices[0].endpoints[0]
        .target
        .as_ref()
        .expect("a target");
    assert!(state.frontends.len() >= 2, "{:?}", state.frontends.keys());
    for spec in state.frontends.values() {
        let target = spec.endpoints[0].target.as_ref().expect("a target");
        assert_eq!(&**target, "web-abc");
        assert!(
            std::sync::Arc::ptr_eq(target, kept),
            "a copy, not the slice's"
        );
    }
}
