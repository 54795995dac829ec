//! No file can stall the agent or hurt what other files serve: limits,
//! linear cutting, the per-file cache with its last good version, files
//! held by a writer, and files that cannot be read.

use std::{
    fs,
    io::Write,
    os::unix::fs::symlink,
    time::{Duration, Instant},
};

use super::{
    HeldFiles, Limits, Loader, ManifestDir, documents::split_documents, file::read_manifest_file,
    parse_documents_with,
};
use crate::{model::ProblemCode, source::Source};

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  clusterIP: 10.96.0.10
  ports:
  - port: 80
";

fn codes(set: &super::ManifestSet) -> Vec<ProblemCode> {
    set.problems.iter().map(|p| p.code).collect()
}

fn small(limits: impl FnOnce(&mut Limits)) -> Limits {
    let mut l = Limits::default();
    limits(&mut l);
    l
}

/// The quadratic cost was copying (and padding) each document: cut
/// documents are slices of the file's text, so the work of cutting is the
/// file's length, however many documents it holds.
#[test]
fn documents_are_slices_of_the_text_so_cutting_is_linear() {
    let text = "---\na: 1\n".repeat(5_000);
    let docs = split_documents(&text, 10_000).expect("within the limit");
    assert_eq!(docs.len(), 5_000);
    let range = text.as_ptr() as usize..text.as_ptr() as usize + text.len();
    let mut covered = 0;
    for doc in &docs {
        let start = doc.text.as_ptr() as usize;
        assert!(range.contains(&start), "document {} was copied", doc.number);
        covered += doc.text.len();
    }
    assert!(covered <= text.len());
    assert_eq!(docs[4_999].first_line, 9_999);
}

/// Only a sanity check, not a speed target (the machine is shared): 40,000
/// documents parse, all of them, in well under the resync period.
#[test]
fn forty_thousand_documents_parse() {
    let text: String = (0..40_000)
        .map(|i| format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}}}\n"))
        .collect();
    let started = Instant::now();
    let set = parse_documents_with("many.yaml", &text, &Limits::default());
    assert!(set.problems.is_empty(), "{:?}", set.problems.first());
    assert!(started.elapsed() < Duration::from_secs(120));
}

#[test]
fn more_documents_than_allowed_refuse_the_file_and_as_many_pass() {
    let text = SERVICE.replace("apiVersion", "---\napiVersion").repeat(3);
    let at_limit = parse_documents_with("three.yaml", &text, &small(|l| l.max_documents = 3));
    assert!(at_limit.problems.is_empty(), "{:?}", at_limit.problems);
    let over = parse_documents_with("three.yaml", &text, &small(|l| l.max_documents = 2));
    assert_eq!(codes(&over), vec![ProblemCode::TooManyDocuments]);
    assert!(over.services.is_empty());
    assert!(over.problems[0].reason.contains("--manifest-max-documents"));
}

/// Both spellings of nesting: flow (`[[[`) and block (indentation).
#[test]
fn nesting_deeper_than_allowed_is_too_deep() {
    let flow = format!("{}{}\n", "[".repeat(50), "]".repeat(50));
    let block: String = (0..50).map(|i| format!("{}- \n", "  ".repeat(i))).collect();
    let limits = small(|l| l.max_depth = 20);
    for text in [flow, block] {
        let set = parse_documents_with("deep.yaml", &text, &limits);
        assert_eq!(
            codes(&set),
            vec![ProblemCode::TooDeep],
            "{:?}",
            set.problems
        );
        assert!(set.problems[0].reason.contains("--manifest-max-depth"));
        let set = parse_documents_with("deep.yaml", &text, &Limits::default());
        // Read, then refused for what it is (a list, not an object).
        assert_eq!(
            codes(&set),
            vec![ProblemCode::InvalidManifest],
            "50 levels pass the default"
        );
    }
}

/// Billion laughs: nine levels of ten aliases would expand to 10^9 nodes.
#[test]
fn a_yaml_bomb_is_refused_without_expanding_it() {
    let mut text = String::from("a0: &a0 [lol]\n");
    for level in 1..10 {
        let refs = vec![format!("*a{}", level - 1); 10].join(", ");
        text.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
    }
    let started = Instant::now();
    let set = parse_documents_with("bomb.yaml", &text, &Limits::default());
    assert_eq!(
        codes(&set),
        vec![ProblemCode::YamlBudget],
        "{:?}",
        set.problems
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_file_over_the_size_limit_is_not_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("a.yaml"), SERVICE).expect("write");
    // Sparse: 1 GiB on the meter, nothing on the disk.
    let huge = fs::File::create(dir.path().join("huge.yaml")).expect("create");
    huge.set_len(1 << 30).expect("grow");
    let set = Loader::new(dir.path(), Limits::default())
        .load()
        .expect("listable");
    assert_eq!(codes(&set), vec![ProblemCode::FileTooLarge]);
    assert_eq!(set.problems[0].object, "huge.yaml");
    assert!(set.problems[0].reason.contains("--manifest-max-file-bytes"));
    assert_eq!(set.services.len(), 1, "the other file still serves");
}

/// Symlink loops, dangling symlinks and FIFOs are problems of their own
/// name; a FIFO is never opened (that would wait for a writer forever).
#[test]
fn files_that_cannot_be_read_are_problems_of_those_files_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name);
    fs::write(path("a.yaml"), SERVICE).expect("write");
    symlink(path("loop-2.yaml"), path("loop-1.yaml")).expect("symlink");
    symlink(path("loop-1.yaml"), path("loop-2.yaml")).expect("symlink");
    symlink(path("missing"), path("dangling.yaml")).expect("symlink");
    nix::unistd::mkfifo(&path("fifo.yaml"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    fs::write(path("latin1.yaml"), b"a: caf\xe9\n").expect("write");
    let set = Loader::new(dir.path(), Limits::default())
        .load()
        .expect("listable");
    let found: Vec<_> = set
        .problems
        .iter()
        .map(|p| (p.object.as_str(), p.code))
        .collect();
    assert_eq!(
        found,
        vec![
            ("dangling.yaml", ProblemCode::UnreadableFile),
            ("fifo.yaml", ProblemCode::UnreadableFile),
            ("latin1.yaml", ProblemCode::NotUtf8),
            ("loop-1.yaml", ProblemCode::UnreadableFile),
            ("loop-2.yaml", ProblemCode::UnreadableFile),
        ]
    );
    assert_eq!(set.file_of("fifo.yaml"), Some("fifo.yaml"));
    assert_eq!(set.services.len(), 1);
}

#[test]
fn an_unchanged_file_is_not_parsed_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a.yaml");
    fs::write(&file, SERVICE).expect("write");
    let loader = Loader::new(dir.path(), Limits::default());
    let first = loader.load().expect("listable");
    let second = loader.load().expect("listable");
    assert_eq!(first, second);
    assert_eq!(loader.parses(), 1);
    fs::write(&file, SERVICE.replace("name: web", "name: shop")).expect("rewrite");
    let third = loader.load().expect("listable");
    assert_eq!(loader.parses(), 2);
    assert_eq!(third.services[0].metadata.name.as_deref(), Some("shop"));
}

/// A file that stops parsing (a half-written save, a typo) keeps serving
/// what it served, and says so, until it parses again.
#[test]
fn a_file_that_stops_parsing_keeps_its_last_good_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a.yaml");
    fs::write(&file, SERVICE).expect("write");
    let loader = Loader::new(dir.path(), Limits::default());
    assert_eq!(loader.load().expect("listable").services.len(), 1);

    fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: {name: [\n").expect("break");
    let broken = loader.load().expect("listable");
    assert_eq!(broken.services.len(), 1, "the last good Service stays");
    assert_eq!(codes(&broken), vec![ProblemCode::InvalidYaml]);
    assert!(broken.problems[0].reason.contains("last good version"));

    fs::write(&file, SERVICE.replace("name: web", "name: fixed")).expect("fix");
    let fixed = loader.load().expect("listable");
    assert!(fixed.problems.is_empty());
    assert_eq!(fixed.services[0].metadata.name.as_deref(), Some("fixed"));

    fs::remove_file(&file).expect("remove");
    assert!(
        loader.load().expect("listable").is_empty(),
        "a removed file is gone"
    );
}

/// A file held by a writer is served as last read; a new file still being
/// written is not served at all yet.
#[test]
fn a_held_file_is_served_as_last_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a.yaml");
    fs::write(&file, SERVICE).expect("write");
    let loader = Loader::new(dir.path(), Limits::default());
    loader.load().expect("listable");
    let held = loader.held();
    held.lock().unwrap().insert(file.clone());
    fs::write(&file, "").expect("truncate");
    fs::write(dir.path().join("b.yaml"), "").expect("new, empty so far");
    held.lock().unwrap().insert(dir.path().join("b.yaml"));
    assert_eq!(loader.load().expect("listable").services.len(), 1);
    held.lock().unwrap().clear();
    assert!(loader.load().expect("listable").services.is_empty());
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The watcher's side of `cat > a.yaml`: while the writer has the file
/// open its content is not used and nothing wakes the agent; closing it
/// does both.
#[tokio::test]
async fn a_file_being_written_is_read_when_its_writer_closes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a.yaml");
    fs::write(&file, SERVICE).expect("write");
    let mut source = ManifestDir::watch(dir.path()).expect("watch");
    assert_eq!(source.loader().load().expect("listable").services.len(), 1);
    // Drain the wake-up the first write may still owe.
    let _ = tokio::time::timeout(Duration::from_millis(300), source.changed()).await;

    let next = SERVICE.replace("name: web", "name: new");
    let (head, tail) = next.split_at(25);
    let mut writer = fs::File::create(&file).expect("open for writing");
    writer.write_all(head.as_bytes()).expect("write");
    writer.flush().expect("flush");
    let held = source.loader().held();
    wait_until("the write is seen", || held.lock().unwrap().contains(&file));
    assert_eq!(
        source.loader().load().expect("listable").services.len(),
        1,
        "a half-written file replaced the last version"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), source.changed())
            .await
            .is_err(),
        "a write alone woke the agent"
    );

    writer.write_all(tail.as_bytes()).expect("write the rest");
    drop(writer);
    tokio::time::timeout(Duration::from_secs(10), source.changed())
        .await
        .expect("closing the file wakes the agent");
    let set = source.loader().load().expect("listable");
    assert_eq!(set.services[0].metadata.name.as_deref(), Some("new"));
}

/// Renaming a complete file into place (what `kubectl`-style tools and
/// ConfigMap mounts do) is read at once.
#[tokio::test]
async fn a_file_renamed_into_place_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut source = ManifestDir::watch(dir.path()).expect("watch");
    let staged = dir.path().join(".a.yaml.tmp");
    fs::write(&staged, SERVICE).expect("stage");
    let _ = tokio::time::timeout(Duration::from_millis(300), source.changed()).await;
    fs::rename(&staged, dir.path().join("a.yaml")).expect("rename");
    tokio::time::timeout(Duration::from_secs(10), source.changed())
        .await
        .expect("the rename wakes the agent");
    assert!(source.loader().held().lock().unwrap().is_empty());
    assert_eq!(source.loader().load().expect("listable").services.len(), 1);
}

/// Holds the reads of `slow.yaml` until released.
static SLOW_RELEASED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

fn slow_read(
    path: &std::path::Path,
    name: &str,
    limits: &Limits,
    memo: &super::memo::DocumentMemo,
) -> super::file::FileRead {
    while name == "slow.yaml" && !SLOW_RELEASED.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    read_manifest_file(path, name, limits, memo)
}

fn service_names(set: &super::ManifestSet) -> Vec<&str> {
    set.services
        .iter()
        .filter_map(|s| s.metadata.name.as_deref())
        .collect()
}

/// A file whose parse outlasts the wait serves its previous version while
/// the other files' changes go through; its parse is not started again by
/// the next load, and its end wakes the agent.
#[test]
fn a_slow_file_delays_only_itself() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, service: &str| {
        fs::write(
            dir.path().join(name),
            SERVICE.replace("name: web", &format!("name: {service}")),
        )
        .expect("write")
    };
    write("a.yaml", "a");
    write("slow.yaml", "s");
    let (wake, mut woken) = tokio::sync::mpsc::unbounded_channel();
    let loader = Loader::watched(dir.path(), Limits::default(), HeldFiles::default(), wake)
        .with_read(slow_read);
    assert_eq!(
        service_names(&loader.load().expect("listable")),
        vec!["a", "s"]
    );

    SLOW_RELEASED.store(false, Ordering::SeqCst);
    write("a.yaml", "a2");
    write("slow.yaml", "s2-longer");
    let meanwhile = loader
        .load_within(Duration::from_millis(200))
        .expect("listable");
    assert_eq!(service_names(&meanwhile), vec!["a2", "s"]);
    let again = loader
        .load_within(Duration::from_millis(50))
        .expect("listable");
    assert_eq!(service_names(&again), vec!["a2", "s"]);
    assert_eq!(loader.parses(), 4, "the running parse was started again");
    assert!(woken.try_recv().is_err(), "woken before the parse ended");

    SLOW_RELEASED.store(true, Ordering::SeqCst);
    wait_until("the late parse wakes the agent", || {
        woken.try_recv().is_ok()
    });
    let done = loader
        .load_within(Duration::from_millis(50))
        .expect("listable");
    assert_eq!(service_names(&done), vec!["a2", "s2-longer"]);
    assert_eq!(loader.parses(), 4);
}
