//! The source side of the corpus: each `corpus/source-*.yaml` (and each
//! case made at test time: too big to check in, or not a plain file) sits
//! next to a good Service, which must stay served, while the bad file is
//! exactly one problem, with the code and reason its header expects.
//!
//! Header: `# expect: <code> <substring of the reason>` (the desired-state
//! corpus, `desired-*.yaml`, uses the same).

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

use lb::source::{Limits, manifests::Loader};

const GOOD: &str = "apiVersion: v1
kind: Service
metadata: {name: good, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{port: 80}]
";

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// `(code, reason substring)` from a corpus file's first line.
fn expectation(bytes: &[u8]) -> (String, String) {
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = String::from_utf8_lossy(first);
    let rest = first
        .strip_prefix("# expect: ")
        .unwrap_or_else(|| panic!("no `# expect:` header: {first}"));
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    (code.to_owned(), reason.to_owned())
}

/// Loads `dir` and checks the good Service is served and `bad` is one
/// problem with `code` and a reason containing `reason`.
fn check(dir: &Path, bad: &str, code: &str, reason: &str) {
    let set = Loader::new(dir, Limits::default())
        .load()
        .expect("the directory is readable");
    let names: Vec<_> = set
        .services
        .iter()
        .filter_map(|s| s.metadata.name.as_deref())
        .collect();
    assert!(names.contains(&"good"), "{bad}: the good Service is gone");
    assert_eq!(set.problems.len(), 1, "{bad}: {:?}", set.problems);
    let problem = &set.problems[0];
    assert_eq!(problem.code.as_str(), code, "{bad}: {problem:?}");
    assert!(problem.reason.contains(reason), "{bad}: {problem:?}");
    assert_eq!(
        set.file_of(&problem.object),
        Some(bad),
        "{bad}: {problem:?}"
    );
}

fn dir_with_good() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("good.yaml"), GOOD).expect("write");
    dir
}

#[test]
fn every_source_corpus_file_is_one_problem_beside_a_served_service() {
    let mut seen = 0;
    for entry in fs::read_dir(corpus_dir()).expect("the corpus is there") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("source-") {
            continue;
        }
        let bytes = fs::read(&path).expect("read");
        let (code, reason) = expectation(&bytes);
        let dir = dir_with_good();
        fs::write(dir.path().join(&name), &bytes).expect("copy");
        check(dir.path(), &name, &code, &reason);
        seen += 1;
    }
    assert!(seen >= 5, "only {seen} source corpus files");
}

#[test]
fn generated_cases_are_one_problem_each() {
    for case in generated_cases() {
        let dir = dir_with_good();
        (case.make)(&dir.path().join(case.name));
        check(dir.path(), case.name, case.code, case.reason);
    }
}

struct Case {
    name: &'static str,
    code: &'static str,
    reason: &'static str,
    make: fn(&Path),
}

/// The cases that cannot be checked in; the end-to-end corpus test makes
/// the same ones.
fn generated_cases() -> Vec<Case> {
    vec![
        Case {
            name: "source-huge.yaml",
            code: "file-too-large",
            reason: "--manifest-max-file-bytes",
            // Sparse: past the limit on the meter, nothing on the disk.
            make: |path| {
                let file = fs::File::create(path).expect("create");
                file.set_len(Limits::DEFAULT.max_file_bytes + 1)
                    .expect("grow");
            },
        },
        Case {
            name: "source-many-documents.yaml",
            code: "too-many-documents",
            reason: "--manifest-max-documents",
            make: |path| {
                let text = "---\n".repeat(Limits::DEFAULT.max_documents + 1);
                fs::write(path, text).expect("write");
            },
        },
        Case {
            name: "source-symlink-loop.yaml",
            code: "unreadable-file",
            reason: "symlink",
            make: |path| symlink(path, path).expect("symlink"),
        },
        Case {
            name: "source-fifo.yaml",
            code: "unreadable-file",
            reason: "not a regular file",
            make: |path| nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo"),
        },
    ]
}
