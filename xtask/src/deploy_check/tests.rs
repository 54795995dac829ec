use std::{fs, path::Path};

use super::{containerfile, manifests, validate};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn read(path: &str) -> String {
    fs::read_to_string(repo().join(path)).unwrap()
}

#[test]
fn a_missing_schema_counts_as_a_problem_though_the_validator_exits_zero() {
    // kubernetes-validate prints a WARN and exits 0 for a kind it has no
    // schema for (a misspelt kind or apiVersion).
    let output = "INFO a.yaml passed for resource configmap/x against version 1.29\n\
                  WARN b.yaml Couldn't find schema for kind DeamonSet with api version apps/v1 for kubernetes version 1.29\n\
                  ERROR c.yaml did not validate for resource daemonset/lb against version 1.29: spec.x\n";
    let found = validate::problems(output);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("DeamonSet") && found[1].contains("spec.x"));
    assert!(validate::problems("INFO a.yaml passed\n").is_empty());
}

#[test]
fn every_yaml_file_but_kustomizations_is_a_manifest() {
    let dir = std::env::temp_dir().join(format!("lb-deploy-files-{}", std::process::id()));
    fs::create_dir_all(dir.join("examples/demo")).unwrap();
    for file in [
        "kustomization.yaml",
        "a.yaml",
        "examples/demo/b.yml",
        "README.md",
        "examples/kustomization.yaml",
    ] {
        fs::write(dir.join(file), "").unwrap();
    }
    let found = manifests::files(&dir).unwrap();
    fs::remove_dir_all(&dir).unwrap();
    let names: Vec<_> = found
        .iter()
        .map(|p| p.strip_prefix(&dir).unwrap().to_str().unwrap())
        .collect();
    assert_eq!(names, ["a.yaml", "examples/demo/b.yml"]);
}

#[test]
fn the_deploy_manifests_include_the_daemonset_and_the_examples() {
    let found = manifests::files(&repo().join("deploy")).unwrap();
    let has = |name: &str| found.iter().any(|p| p.ends_with(name));
    assert!(has("daemonset.yaml") && has("rbac.yaml") && has("examples/demo/services.yaml"));
    assert!(!has("kustomization.yaml"));
}

#[test]
fn an_image_the_kustomization_does_not_replace_is_found() {
    // The DaemonSet as written (image: lb), not rendered: kustomize's
    // `images` entry did not apply, which kustomize itself never reports.
    let problems = manifests::image_problems(
        &read("deploy/kustomization.yaml"),
        &read("deploy/daemonset.yaml"),
    )
    .unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("localhost/lb:0.1.0") && problems[0].contains("no container uses it")
    );
    assert!(problems[1].contains("DaemonSet/lb runs image \"lb\""));
}

#[test]
fn the_rendered_daemonset_runs_the_kustomization_image() {
    let rendered =
        read("deploy/daemonset.yaml").replace("image: lb\n", "image: localhost/lb:0.1.0\n");
    let problems =
        manifests::image_problems(&read("deploy/kustomization.yaml"), &rendered).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn continuation_lines_join_into_one_instruction_at_its_first_line() {
    let text = "# comment\nFROM a AS b\n\nRUN one \\\n    # inside\n    two\nCOPY x y\n";
    let found = containerfile::instructions(text);
    let summary: Vec<_> = found
        .iter()
        .map(|i| (i.line, i.keyword.as_str(), i.args.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (2, "FROM", "a AS b"),
            (4, "RUN", "one two"),
            (7, "COPY", "x y")
        ]
    );
}

fn problems_of(text: &str) -> Vec<String> {
    containerfile::problems(
        text,
        repo(),
        &containerfile::ignore_patterns("target\n**/target\n.git\n"),
    )
}

#[test]
fn the_containerfile_copies_only_what_exists_from_stages_that_exist() {
    let text = read("deploy/Containerfile");
    let ignore = containerfile::ignore_patterns(&read("deploy/Containerfile.dockerignore"));
    let problems = containerfile::problems(&text, repo(), &ignore);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn a_copy_source_missing_from_the_context_is_found() {
    let problems = problems_of("FROM a AS b\nCOPY Cargo.toml no-such-dir ./\n");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("line 2") && problems[0].contains("no-such-dir does not exist"));
}

#[test]
fn a_copy_from_a_stage_not_defined_before_is_found() {
    let problems =
        problems_of("FROM a AS runtime\nCOPY --from=builder /out/lb /lb\nFROM b AS builder\n");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("--from=builder names no earlier stage"));
    // By index, by name (any case) and from an image are fine.
    let fine = "FROM a AS Builder\nFROM b\nCOPY --from=0 /x /x\nCOPY --from=builder /x /x\nCOPY --from=docker.io/x:1 /x /x\n";
    assert!(problems_of(fine).is_empty(), "{:?}", problems_of(fine));
}

#[test]
fn a_copy_source_the_ignore_file_excludes_is_found() {
    let problems = problems_of("FROM a\nCOPY target/debug/lb /lb\nCOPY lb-userspace/target /x\n");
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .all(|p| p.contains("excluded by the ignore file"))
    );
}

#[test]
fn stages_and_sources_outside_the_context_are_checked() {
    assert!(problems_of("COPY a b\n")[0].contains("before any FROM"));
    assert!(problems_of("RUN true\n")[0].contains("no FROM"));
    assert!(problems_of("FROM a AS x\nFROM b AS X\n")[0].contains("a second stage named \"x\""));
    assert!(problems_of("FROM a\nCOPY ../etc /x\n")[0].contains("outside the build context"));
}

#[test]
fn the_builder_installs_what_setup_installs() {
    let text = read("deploy/Containerfile");
    let channel = containerfile::toolchain_channel(&read("rust-toolchain.toml")).unwrap();
    assert_eq!(channel, "1.98");
    let pins = |text: &str| {
        containerfile::pin_problems(
            text,
            &channel,
            crate::setup::LLVM_BIN,
            crate::setup::BPF_LINKER_VERSION,
        )
    };
    assert!(pins(&text).is_empty(), "{:?}", pins(&text));
    let drifted = text
        .replace("rust:1.98-", "rust:1.97-")
        .replace("llvm-22-dev", "llvm-21-dev");
    let problems = pins(&drifted);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("rust:1.98-") && problems[1].contains("llvm-22-dev"));
}

#[test]
fn the_agent_adds_only_the_datapath_s_and_the_udp_abort_s_capabilities() {
    let caps = manifests::agent_capabilities(&read("deploy/daemonset.yaml")).unwrap();
    assert_eq!(
        caps,
        ["BPF", "NET_ADMIN", "PERFMON", "SYS_PTRACE", "SYS_ADMIN"]
    );
    let privileged = read("deploy/daemonset.yaml").replace("privileged: false", "privileged: true");
    let err = manifests::agent_capabilities(&privileged).unwrap_err();
    assert!(err.to_string().contains("privileged: false"), "{err}");
    let keeps = read("deploy/daemonset.yaml").replace("drop: [\"ALL\"]", "drop: [\"NET_RAW\"]");
    assert!(manifests::agent_capabilities(&keeps).is_err());
}
