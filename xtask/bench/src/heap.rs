//! What holds the agent's memory, by stage, in process: the heap the
//! control-plane fixture's objects hold once read (the source's snapshot),
//! then the tracker's desired state, then the plan's applied state once
//! programmed, and the peak of each stage, counted by a global allocator
//! (`Counting`, installed by lb-bench's `main`). The agent's RSS (the
//! control-plane and cluster-mode sections) is this heap plus the binary,
//! the runtime and the allocator's slack; the in-memory datapath's own
//! contents (the kernel's maps, in the agent) are measured and left out.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Result, bail};
use lb::{
    datapath::{DatapathMaps, MemoryMaps},
    desired::{Holders, Rules, incremental::Tracker},
    model::NodeFacts,
    plan::{self, Applied, Planner},
    source::manifests::parse_documents,
};

use crate::{BenchOptions, control_plane, fixture::manifests_text, report::Section};

pub const TITLE: &str = "Control plane: what holds the heap";
/// Held once each stage is done (cumulative: each includes the ones before).
pub const HELD: &str = "heap held after the stage, MiB";
/// The most held at once during the stage.
pub const PEAK: &str = "heap peak during the stage, MiB";
pub const SOURCE: &str = "source: the manifests read (snapshot)";
pub const DESIRED: &str = "desired: the tracker's first update";
pub const PLAN: &str = "plan: planned and applied (without the maps' contents)";
const SIZES: [usize; 3] = [1, 1_000, 10_000];

const METHOD: &str = "The control-plane fixture's manifests (`fixture::manifests_text`) read \
with `parse_documents` from the text (the text itself is not counted), the tracker's first \
update (`Tracker::update_shared`, as the agent's first sync), then the planner's first plan \
applied into the in-memory datapath (`MemoryMaps`), the agent's stages of a full sync in its \
order, one process, release build. A global allocator counts the bytes allocated and not yet \
freed (what the agent's heap holds, before the allocator's own slack) and the peak of each \
stage; the in-memory maps' contents are measured by dropping them last and subtracted (in the \
agent they are the kernel's). Each stage keeps what the ones before it hold, as the agent does.";

/// The global allocator that counts live bytes and their peak, per
/// thread: the stages run on one thread, and other threads (the bench's
/// own, or other tests) must not count.
pub struct Counting;

static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: every call is System's; the counters are only arithmetic on
// const-initialized thread locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        INSTALLED.store(true, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }
}

/// Adds `bytes` to this thread's count (nothing while the thread ends).
fn count(bytes: isize) {
    let _ = LIVE.try_with(|live| {
        live.set(live.get() + bytes);
        let _ = PEAK_BYTES.try_with(|peak| peak.set(peak.get().max(live.get())));
    });
}

/// This thread's live bytes (a thread that frees what another allocated
/// may count below zero: counted from a base, that cancels out).
fn live() -> isize {
    LIVE.with(Cell::get)
}

/// Starts a stage: its peak counts from what is held now.
fn reset_peak() {
    PEAK_BYTES.with(|peak| peak.set(LIVE.with(Cell::get)));
}

fn peak() -> isize {
    PEAK_BYTES.with(Cell::get)
}

/// Bytes held after, and peak during, each stage.
#[derive(Debug, Default, PartialEq)]
pub struct Stages {
    pub source: (usize, usize),
    pub desired: (usize, usize),
    pub plan: (usize, usize),
}

/// The stages of a full sync at `services` Services, counted from what
/// was held before it.
pub fn measure(services: usize) -> Result<Stages> {
    let text = manifests_text(services);
    let node = NodeFacts {
        name: xtask::testbed::NODE_NAME.into(),
        addresses: vec![xtask::testbed::NODE_ADDR.into()],
        zone: None,
    };
    let base = live();
    let since = |bytes: isize| (bytes - base).max(0) as usize;
    let mut stages = Stages::default();
    reset_peak();
    let set = parse_documents("services.yaml", &text);
    if !set.problems.is_empty() {
        bail!("the fixture has problems: {:?}", set.problems);
    }
    stages.source = (since(live()), since(peak()));
    reset_peak();
    let mut tracker = Tracker::new(Rules::default());
    tracker.update_shared(&set.services, &set.slices, &node, &Holders::default);
    stages.desired = (since(live()), since(peak()));
    reset_peak();
    let mut maps = MemoryMaps::new(services as u32 + 16);
    let mut applied = Applied::read(&maps)?;
    let mut planner = Planner::new();
    let (state, changes) = tracker.last();
    let first = planner.plan(state, changes, &applied, maps.max_tables());
    plan::apply(&first, &mut maps, &mut applied)?;
    drop(first);
    let (held, peak_bytes) = (live(), peak());
    drop(maps);
    let in_maps = held - live();
    stages.plan = (since(held - in_maps), since(peak_bytes - in_maps));
    drop((planner, applied, tracker, set));
    Ok(stages)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub fn run(options: &BenchOptions) -> Result<Section> {
    let mut section = Section::new(TITLE, METHOD);
    if !INSTALLED.load(Ordering::Relaxed) {
        section.note(
            "not measured: the counting allocator is not installed (lb-bench's main installs it)",
        );
        return Ok(section);
    }
    for n in options.service_counts(&SIZES) {
        let stages = measure(n)?;
        for (stage, (held, peak)) in [
            (SOURCE, stages.source),
            (DESIRED, stages.desired),
            (PLAN, stages.plan),
        ] {
            section.figure(HELD, stage, n, "MiB", &[mib(held)]);
            section.figure(PEAK, stage, n, "MiB", &[mib(peak)]);
        }
    }
    Ok(section)
}

/// One line of what holds the heap at `n` Services, for the targets
/// section: each stage's share of what the full sync holds, per Service.
pub fn summary(sections: &[Section], n: usize) -> Option<String> {
    let held = |stage: &str| {
        sections
            .iter()
            .find_map(|s| s.find(HELD, stage, n))
            .map(|f| f.summary.median)
    };
    let peak = sections
        .iter()
        .filter_map(|s| s.find(PEAK, PLAN, n))
        .map(|f| f.summary.median)
        .next()?;
    let (source, desired, plan) = (held(SOURCE)?, held(DESIRED)?, held(PLAN)?);
    let per_service = |mib: f64| mib * 1024.0 / n as f64;
    let fixed = sections
        .iter()
        .find_map(|s| s.find(control_plane::MEMORY, control_plane::PEAK, 1))
        .map(|f| {
            format!(
                "; the agent's peak RSS at 1 Service (binary, runtime, programs loaded): {:.1} MiB",
                f.summary.median
            )
        })
        .unwrap_or_default();
    Some(format!(
        "what holds the heap at {n} Services (in process, the agent's stages of a full sync): \
         source objects {source:.1} MiB ({:.2} KiB a Service), desired state {:.1} MiB ({:.2} KiB), \
         plan and applied state {:.1} MiB ({:.2} KiB); {plan:.1} MiB held after the sync, {peak:.1} MiB \
         at its peak, before the binary, the runtime and the allocator's slack{fixed}",
        per_service(source),
        desired - source,
        per_service(desired - source),
        plan - desired,
        per_service(plan - desired),
    ))
}

/// The lib's own tests count with it too.
#[cfg(test)]
#[global_allocator]
static COUNTING: Counting = Counting;

#[cfg(test)]
mod tests {
    /// Each stage holds what the ones before it hold and more; the plan's
    /// peak is at least what it holds after.
    #[test]
    fn the_stages_of_a_small_sync_are_counted() {
        let stages = super::measure(20).expect("measured");
        let (source, desired, plan) = (stages.source, stages.desired, stages.plan);
        assert!(source.0 > 0 && source.1 >= source.0, "{stages:?}");
        assert!(desired.0 > source.0, "{stages:?}");
        assert!(plan.0 > desired.0 && plan.1 >= plan.0, "{stages:?}");
    }
}
