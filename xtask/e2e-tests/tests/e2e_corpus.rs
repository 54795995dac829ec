//! End-to-end: no manifest can hurt a Service that works. The real agent
//! on the demo topology; every corpus file (`desired-*` and `source-*` of
//! lb-userspace/tests/corpus, plus the cases made here because they cannot
//! be checked in) is placed next to the good manifests, one at a time,
//! while clients keep making real requests to the good Services: none may
//! fail, `lb status -o json` must report the file's expected problem, and
//! the agent's peak memory must stay bounded. Same rules as `e2e.rs`.

use std::{
    fs,
    io::Write,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use xtask::demo::{Env, FRONTENDS, Frontend, Origin, exclusive_env, exclusive_env_with};

/// What the agent may reach at its peak, corpus included: the largest
/// file it reads is what the limits allow, and the others are refused
/// before they cost memory.
const MAX_PEAK_RSS_KIB: u64 = 256 * 1024;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lb-userspace/tests/corpus")
}

/// The settings the corpus is written for (the header of
/// `corpus/good/service.yaml`), as the agent's flags: the node's own
/// address (the testbed's 198.51.100.1 is the other), the service CIDR and
/// the externalIP ranges the operator owns. No minimum sync period: the
/// test places and removes a hundred files back to back, each waited for,
/// and measures problem reporting, not the coalescing of bursts (with
/// kube-proxy's 1 s each wait is a second of full-rate traffic, enough to
/// run the client out of ephemeral ports).
const CORPUS_AGENT_ARGS: &[&str] = &[
    "--min-sync-period",
    "0s",
    "--node-address",
    "192.168.1.10",
    "--service-cidr",
    "10.96.0.0/12",
    "--allow-external-ip-cidr",
    "198.51.100.0/24",
    "--allow-external-ip-cidr",
    "192.168.1.0/24",
];

/// The corpus's good Service, its endpoints moved onto the testbed's pods
/// (on this node, as their nodeName then says: a pod said to be on another
/// node is masqueraded under policy Cluster, and only the pod hook would
/// translate a local pod's masqueraded replies back) so that real requests
/// reach it; every frontend a bad object may try to take stays as the
/// corpus has it.
fn write_good_service(dir: &Path) -> anyhow::Result<()> {
    let text = fs::read_to_string(corpus_dir().join("good/service.yaml"))?
        .replace("10.244.1.7", "203.0.113.11")
        .replace("10.244.2.8", "203.0.113.12")
        .replace(
            "nodeName: node-b",
            &format!("nodeName: {}", xtask::testbed::NODE_NAME),
        );
    fs::write(dir.join("good.yaml"), text)?;
    Ok(())
}

/// The good Service's frontends that requests go to: its NodePort from
/// outside (XDP), its ClusterIP from a pod (socket hooks).
const GOOD_FRONTENDS: [Frontend; 2] = [
    Frontend {
        label: "NodePort       default/good:http",
        origin: Origin::Client,
        udp: false,
        addr: "198.51.100.1:30080",
    },
    Frontend {
        label: "ClusterIP      default/good:http",
        origin: Origin::Pod(2),
        udp: false,
        addr: "10.96.0.10:80",
    },
];

/// A file to place, and what `lb status` must then say about it.
struct Case {
    name: String,
    code: String,
    reason: String,
    place: Box<dyn Fn(&Path)>,
}

/// `# expect: <code> <reason substring>` on the first line.
fn expectation(bytes: &[u8]) -> Option<(String, String)> {
    let first = bytes.split(|&b| b == b'\n').next()?;
    let rest = String::from_utf8_lossy(first)
        .strip_prefix("# expect: ")?
        .to_owned();
    let (code, reason) = rest.split_once(' ').unwrap_or((&rest, ""));
    Some((code.to_owned(), reason.to_owned()))
}

fn corpus_cases() -> Vec<Case> {
    let mut files: Vec<PathBuf> = fs::read_dir(corpus_dir())
        .expect("the corpus is there")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            (name.starts_with("desired-") || name.starts_with("source-")) && name.ends_with(".yaml")
        })
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for path in files {
        let bytes = fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (code, reason) =
            expectation(&bytes).unwrap_or_else(|| panic!("{name} has no `# expect:` header"));
        cases.push(Case {
            name: name.clone(),
            code,
            reason,
            // Renamed into place, as tools write files.
            place: Box::new(move |dir| {
                let staged = dir.join(format!(".{name}.tmp"));
                fs::write(&staged, &bytes).unwrap();
                fs::rename(&staged, dir.join(&name)).unwrap();
            }),
        });
    }
    cases.extend(generated_cases());
    cases
}

/// The cases that cannot be checked in (as lb-userspace/tests/source_corpus.rs).
fn generated_cases() -> Vec<Case> {
    let case = |name: &str, code: &str, reason: &str, place: Box<dyn Fn(&Path)>| Case {
        name: name.into(),
        code: code.into(),
        reason: reason.into(),
        place,
    };
    vec![
        case(
            "source-huge.yaml",
            "file-too-large",
            "--manifest-max-file-bytes",
            // Sparse: 1 GiB on the meter, nothing on the disk.
            Box::new(|dir| {
                let file = fs::File::create(dir.join("source-huge.yaml")).unwrap();
                file.set_len(1 << 30).unwrap();
            }),
        ),
        case(
            "source-many-documents.yaml",
            "too-many-documents",
            "--manifest-max-documents",
            Box::new(|dir| {
                fs::write(
                    dir.join("source-many-documents.yaml"),
                    "---\n".repeat(50_001),
                )
                .unwrap()
            }),
        ),
        case(
            "source-symlink-loop.yaml",
            "unreadable-file",
            "symlink",
            Box::new(|dir| {
                let path = dir.join("source-symlink-loop.yaml");
                symlink(&path, &path).unwrap()
            }),
        ),
        case(
            "source-fifo.yaml",
            "unreadable-file",
            "not a regular file",
            Box::new(|dir| {
                let path = dir.join("source-fifo.yaml");
                let made = Command::new("mkfifo").arg(&path).status().unwrap();
                assert!(made.success());
            }),
        ),
    ]
}

fn status(env: &Env) -> Value {
    let out = Command::new(&env.lb)
        .args(["status", "-o", "json", "--state-dir"])
        .arg(env.state_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lb status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("lb status -o json prints JSON")
}

/// The problems of `status` that came from `file`.
fn problems_of(status: &Value, file: &str) -> Vec<Value> {
    status["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["file"] == file)
        .cloned()
        .collect()
}

fn wait_for(env: &Env, what: &str, mut done: impl FnMut(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = status(env);
        if done(&now) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}; lb status: {now:#}\n{}",
            env.agent_log_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn frontend(label_part: &str) -> Frontend {
    *FRONTENDS
        .iter()
        .find(|f| f.label.contains(label_part))
        .expect("known frontend")
}

/// Sets its flag when dropped, also when `work` panics: the clients must
/// stop, or the scope would wait for them forever.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `work` while clients keep requesting `targets`; returns every
/// failed request.
fn under_traffic(env: &Env, targets: [Frontend; 2], work: impl FnOnce()) -> Vec<String> {
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        let clients: Vec<_> = targets
            .iter()
            .map(|target| {
                let stop = &stop;
                scope.spawn(move || {
                    let mut failed = Vec::new();
                    let mut answered = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let tally = env.request(target, 5).unwrap();
                        answered += tally.answers.values().sum::<u32>();
                        failed.extend(
                            tally
                                .errors
                                .into_iter()
                                .map(|e| format!("{}: {e}", target.label)),
                        );
                    }
                    assert!(answered > 0, "{} was never asked", target.label);
                    failed
                })
            })
            .collect();
        {
            let _stop = StopOnDrop(&stop);
            work();
        }
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    })
}

/// The agent's peak resident memory (VmHWM), in KiB.
fn peak_rss_kib(env: &Env) -> u64 {
    let pid = env.agent_pid().expect("the agent runs");
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[test]
fn no_corpus_file_hurts_the_good_services() {
    let (_serial, env) = exclusive_env_with(write_good_service, CORPUS_AGENT_ARGS);
    let dir = env.manifests();
    let cases = corpus_cases();
    assert!(cases.len() >= 100, "only {} corpus cases", cases.len());
    let failed = under_traffic(&env, GOOD_FRONTENDS, || {
        for case in &cases {
            (case.place)(&dir);
            wait_for(&env, &format!("{} is reported", case.name), |now| {
                problems_of(now, &case.name).iter().any(|p| {
                    p["code"] == case.code.as_str()
                        && p["reason"].as_str().unwrap().contains(&case.reason)
                })
            });
            let now = status(&env);
            assert_eq!(now["last_sync_ok"], true, "{}: {now:#}", case.name);
            assert_eq!(now["agent_running"], true);
            fs::remove_file(dir.join(&case.name)).unwrap();
            wait_for(&env, &format!("{} is cleared", case.name), |now| {
                problems_of(now, &case.name).is_empty()
            });
        }
    });
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    let peak = peak_rss_kib(&env);
    eprintln!("agent peak RSS over the corpus: {peak} KiB");
    assert!(peak < MAX_PEAK_RSS_KIB, "the agent peaked at {peak} KiB");
    let metrics = status(&env);
    assert!(
        metrics["problems"].as_array().unwrap().is_empty(),
        "{metrics:#}"
    );
}

/// A writer that rewrites the EndpointSlices in place, slowly, in small
/// pieces (`cat > endpointslices.yaml` typed by hand): until it closes the
/// file, the agent serves the version before, so no connection is refused.
#[test]
fn an_endpoint_slice_rewritten_in_small_pieces_refuses_no_connection() {
    let (_serial, env) = exclusive_env();
    let path = env.manifests().join("endpointslices.yaml");
    let text = fs::read(&path).unwrap();
    let targets = [frontend("web-nodeport:http"), frontend("web:http")];
    let failed = under_traffic(&env, targets, || {
        for _ in 0..3 {
            let mut writer = fs::File::create(&path).unwrap();
            for piece in text.chunks(64) {
                writer.write_all(piece).unwrap();
                writer.flush().unwrap();
                thread::sleep(Duration::from_millis(20));
            }
            drop(writer);
            thread::sleep(Duration::from_millis(300));
        }
    });
    assert!(
        failed.is_empty(),
        "refused while the file was written: {failed:?}"
    );
    let now = status(&env);
    assert!(now["problems"].as_array().unwrap().is_empty(), "{now:#}");
}
