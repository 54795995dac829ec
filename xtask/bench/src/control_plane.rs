//! Section "control plane": how long the agent takes to program N Services
//! from nothing and to apply one EndpointSlice change, against the
//! transactions kube-proxy writes for the same Services (iptables-restore,
//! nft -f), and what the agent holds in memory.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use anyhow::{Context, Result, bail};
use xtask::testbed::NODE_ADDR;

use crate::{
    BenchOptions,
    agent_log::{millis_between, phase_figures},
    control_agent::{ControlAgent, without_first_pod},
    fixture::{FILLER_ENDPOINTS, TARGET_UDP_NODE_PORT, expected_frontends, filler_endpoints},
    fixture::{max_services, service_shapes},
    kube_proxy_rules::ServiceShape,
    report::Section,
    rule_loads::{LoadAndChange, iptables_load_and_change, nft_load_and_change},
    udp_probe::{ClientFlow, flow_pinned_to, next_source_port},
};

pub const SIZES: [usize; 3] = [1, 1000, 10_000];

pub const FULL: &str = "full sync";
pub const CHANGE: &str = "one EndpointSlice change";
pub const MEMORY: &str = "agent memory";
/// Where the agent's time went (its own phase timings, from its log).
pub const FULL_PHASES: &str = "full sync, where the time went";
pub const CHANGE_PHASES: &str = "one EndpointSlice change, where the time went";

pub const LB_WRITE: &str = "lb: event -> last map write";
pub const LB_PACKET: &str = "lb: event -> first packet translated";
pub const LB_OWN: &str = "lb: agent's own sync time";
pub const IPTABLES: &str = "iptables-legacy-restore (kube-proxy)";
pub const NFT: &str = "nft -f (kube-proxy)";
pub const RSS: &str = "lb agent RSS after full sync";
pub const PEAK: &str = "lb agent peak RSS (VmHWM)";

/// How long one kube-proxy transaction may run before it is reported as
/// "> bound" instead of a figure (with the agent's own two minutes at
/// 10,000 Services, this keeps the section within about eight minutes).
fn load_bound(options: &BenchOptions) -> Duration {
    Duration::from_secs(if options.quick { 60 } else { 120 })
}

/// From this many Services on, one repetition only (in the last round):
/// the agent's full sync alone takes minutes there on this machine.
const ONCE_FROM: usize = 10_000;

const SYNC_LIMIT: Duration = Duration::from_secs(300);
const CHANGE_LIMIT: Duration = Duration::from_secs(60);

const METHOD: &str = "Each repetition, at each Service count, in this order: (1) lb: a fresh testbed and the \
real agent (release) started over manifests of N Services (the target with 3 pods, an empty \
Service, N-1 fillers); full sync = the agent's start (process spawn) -> its `synced` log line, \
which it writes right after the plan's last map write, stamped with the wall clock (chosen over \
polling the maps from outside, which would compete for the CPU and round up to the polling \
period); first packet = spawn -> the first UDP answer from a pod through the target's NodePort \
(a request every 3 ms from the client namespace). Then one EndpointSlice change: a UDP flow \
pinned to pod-1 by the connection table is found, the manifest with the target's endpoints \
{pod-1,2,3} -> {pod-2,3} is written beside the watched directory and renamed into it; last map \
write = rename -> the next `synced` line; first packet = rename -> the first answer of that same \
flow from pod-2 or pod-3 (the agent purges the removed backend's UDP flows, as kube-proxy \
flushes conntrack). The agent's own sync time is the `elapsed_ms` of its log line (snapshot, \
plan, apply; without process start and datapath load), and where it went is the line's phases \
(`<phase>_us`: snapshot, prelude, desired, plan, outputs, apply up to the write that makes the plan effective, cleanup after it) with spawn -> its `datapath attached` \
line for a full sync. Memory: \
VmRSS after the full sync and VmHWM after the change. (2) kube-proxy's iptables rules for the \
same Services (`fixture::service_shapes`) loaded with `iptables-legacy-restore --noflush` into an \
empty namespace, then its partial-sync input for the same change (top-level chains rewritten, \
the target's KUBE-SVC/KUBE-SEP chains, `-X` of the stale KUBE-SEP) in the same namespace. \
(3) the same with kube-proxy's nftables table (`nft -f`), then the change's transaction \
(the target's chains flushed and refilled, the stale endpoint chain deleted). kube-proxy's \
figures are the kernel transaction alone: no informer, no rule generation, no minSyncPeriod \
(1 s by default in both modes), so they favour kube-proxy.";

type Key = (&'static str, &'static str, usize);

/// The samples of one run, by (case, subject, Services).
#[derive(Default)]
struct Samples(BTreeMap<Key, Vec<f64>>);

impl Samples {
    fn push(&mut self, key: Key, value: f64) {
        self.0.entry(key).or_default().push(value);
    }
}

pub fn run(options: &BenchOptions) -> Result<Section> {
    let mut section = Section::new("Control plane: full sync and one change", METHOD);
    let sizes: Vec<usize> = options
        .service_counts(&SIZES)
        .into_iter()
        .filter(|&n| n <= max_services())
        .collect();
    note_endpoints(&mut section, &sizes);
    if options.repetitions() > 1 && sizes.iter().any(|&n| n >= ONCE_FROM) {
        section.note(format!(
            "At {ONCE_FROM} Services and more, one repetition (in the last round, still between \
             the other sizes' runs): the agent's full sync alone takes minutes there, so those \
             figures are single samples."
        ));
    }
    let mut samples = Samples::default();
    let mut over_bound: BTreeMap<(&str, usize), usize> = BTreeMap::new();
    let mut next_port = 40_000;
    let repetitions = options.repetitions();
    for repetition in 0..repetitions {
        for &n in sizes
            .iter()
            .filter(|&&n| n < ONCE_FROM || repetition + 1 == repetitions)
        {
            if let Err(err) = measure_lb(n, &mut samples, &mut next_port) {
                section.note(format!(
                    "lb at {n} Services, round {}: {err:#}",
                    repetition + 1
                ));
            }
            if crate::lb_only() {
                continue;
            }
            let shapes = service_shapes(n);
            let changed = without_first_endpoint(&shapes)?;
            for (subject, load) in [
                (IPTABLES, iptables_load_and_change as LoadFn),
                (NFT, nft_load_and_change as LoadFn),
            ] {
                // Once a load passed the bound, later repetitions would too.
                if over_bound.contains_key(&(subject, n)) {
                    continue;
                }
                match load(&shapes, &changed, load_bound(options)) {
                    Ok(LoadAndChange { load: None, .. }) => {
                        over_bound.insert((subject, n), repetition + 1);
                    }
                    Ok(LoadAndChange { load, change }) => {
                        for (case, took) in [(FULL, load), (CHANGE, change)] {
                            if let Some(took) = took {
                                samples.push((case, subject, n), took.as_secs_f64() * 1e3);
                            }
                        }
                    }
                    Err(err) => section.note(format!("{subject} at {n} Services: {err:#}")),
                }
            }
        }
    }
    for ((subject, n), repetition) in over_bound {
        section.note(format!(
            "{subject} at {n} Services: the full load took > {} s in round {repetition} \
             (stopped there, not repeated; no figure, and no change measured on top of it)",
            load_bound(options).as_secs()
        ));
    }
    record(&mut section, &samples, &sizes);
    Ok(section)
}

type LoadFn = fn(&[ServiceShape], &ServiceShape, Duration) -> Result<LoadAndChange>;

/// The target (the last shape) without its first endpoint: the change
/// the agent is given, in kube-proxy's shapes.
fn without_first_endpoint(shapes: &[ServiceShape]) -> Result<ServiceShape> {
    let mut target = shapes.last().cloned().context("no Services")?;
    if target.endpoints.is_empty() {
        bail!("the target Service has no endpoints to take away");
    }
    target.endpoints.remove(0);
    Ok(target)
}

fn note_endpoints(section: &mut Section, sizes: &[usize]) {
    for &n in sizes {
        let each = filler_endpoints(n);
        if each < FILLER_ENDPOINTS {
            section.note(format!(
                "At {n} Services the fillers have {each} endpoints each, not {FILLER_ENDPOINTS}: \
                 lb's backend map holds {} backends; kube-proxy's rules are generated from the same \
                 shapes.",
                lb_common::DEFAULT_MAX_BACKENDS
            ));
        }
    }
    let skipped: Vec<String> = SIZES
        .iter()
        .filter(|&&n| n > max_services())
        .map(|n| n.to_string())
        .collect();
    if !skipped.is_empty() {
        section.note(format!(
            "Skipped {} Services: lb holds at most {} Services.",
            skipped.join(", "),
            max_services()
        ));
    }
}

/// One lb repetition at `n` Services: full sync, memory, one change.
fn measure_lb(n: usize, samples: &mut Samples, next_port: &mut u16) -> Result<()> {
    let mut agent = ControlAgent::start(n)?;
    let client = agent.bed.netns_path(&agent.bed.client_ns());
    let target = SocketAddr::from((NODE_ADDR, TARGET_UDP_NODE_PORT));
    let first = ClientFlow::open(&client, next_source_port(next_port), target)?;
    let answered = first.ask_until(SYNC_LIMIT, |_| true)?;
    let full = agent.wait_synced(1, SYNC_LIMIT)?;
    if full.frontends != expected_frontends(n) {
        bail!(
            "the first sync had {} frontends, not {}",
            full.frontends,
            expected_frontends(n)
        );
    }
    let write_ms = millis_between(agent.started, full.at);
    samples.push((FULL, LB_WRITE, n), write_ms);
    samples.push(
        (FULL, LB_PACKET, n),
        millis_between(agent.started, answered),
    );
    samples.push((FULL, LB_OWN, n), full.elapsed_ms as f64);
    let attached = agent.attached().map(|at| (agent.started, at));
    for (subject, ms) in phase_figures(&full, attached) {
        samples.push((FULL_PHASES, subject, n), ms);
    }
    for (subject, ms) in agent.program_loads() {
        samples.push((FULL_PHASES, subject, n), ms);
    }
    let (rss, _) = agent.memory_kib()?;
    samples.push((MEMORY, RSS, n), rss as f64 / 1024.0);

    let flow = flow_pinned_to(&client, target, "pod-1", next_port)?;
    let renamed = agent.replace_manifest(&without_first_pod(n))?;
    let moved = flow.ask_until(CHANGE_LIMIT, |pod| pod != "pod-1")?;
    let change = agent.wait_synced(2, CHANGE_LIMIT)?;
    let write_ms = millis_between(renamed, change.at);
    if write_ms < 0.0 {
        bail!("the change's sync is stamped before the rename ({write_ms:.1} ms)");
    }
    samples.push((CHANGE, LB_WRITE, n), write_ms);
    samples.push((CHANGE, LB_PACKET, n), millis_between(renamed, moved));
    samples.push((CHANGE, LB_OWN, n), change.elapsed_ms as f64);
    for (subject, ms) in phase_figures(&change, None) {
        samples.push((CHANGE_PHASES, subject, n), ms);
    }
    let (_, peak) = agent.memory_kib()?;
    samples.push((MEMORY, PEAK, n), peak as f64 / 1024.0);
    Ok(())
}

fn record(section: &mut Section, samples: &Samples, sizes: &[usize]) {
    for (&(case, subject, n), values) in &samples.0 {
        let unit = if case == MEMORY { "MiB" } else { "ms" };
        section.figure(case, subject, n, unit, values);
    }
    for &n in sizes {
        for (case, what) in [(FULL, "full sync"), (CHANGE, "one change")] {
            for (kube, name) in [(IPTABLES, "iptables-legacy-restore"), (NFT, "nft -f")] {
                section.ratio(
                    &format!("lb {what} (last map write) / {name}, {n} Services"),
                    (case, LB_WRITE, n),
                    (case, kube, n),
                );
            }
        }
    }
    if let (Some(&small), Some(&large)) = (sizes.first(), sizes.last())
        && small != large
    {
        for (case, subject) in [(FULL, LB_WRITE), (FULL, IPTABLES), (FULL, NFT)] {
            section.ratio(
                &format!("{subject} full sync, {large} / {small} Services"),
                (case, subject, large),
                (case, subject, small),
            );
        }
    }
    section.plot("control-full-sync.svg", "Full sync from empty", "ms", FULL);
    section.plot(
        "control-change.svg",
        "One EndpointSlice change",
        "ms",
        CHANGE,
    );
    section.plot("control-memory.svg", "lb agent memory", "MiB", MEMORY);
    section.note(
        "lb's event -> last map write includes re-reading the changed manifest file (the watcher \
         wakes the agent at the rename, with no settle time); the agent runs with \
         --resync-seconds 3600 so no periodic resync falls inside a measurement, and with \
         --min-sync-period 0s, as kube-proxy's figures have no minimum interval.",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kube_proxy_change_is_the_agents() {
        let shapes = service_shapes(5);
        let changed = without_first_endpoint(&shapes).unwrap();
        assert_eq!(changed.name, "bench/target:http");
        assert_eq!(changed.endpoints.len(), 2);
        assert_eq!(changed.endpoints[0].0, xtask::testbed::pod_addr(1));
    }

    #[test]
    fn ratios_compare_lb_with_each_rule_set_in_the_same_run() {
        let mut samples = Samples::default();
        for (subject, value) in [(LB_WRITE, 50.0), (IPTABLES, 200.0), (NFT, 100.0)] {
            samples.push((FULL, subject, 1000), value);
        }
        let mut section = Section::new("t", "m");
        record(&mut section, &samples, &[1000]);
        let ratio = |label: &str| {
            section
                .ratios
                .iter()
                .find(|(l, _)| l.as_str() == label)
                .map(|(_, r)| *r)
        };
        assert_eq!(
            ratio("lb full sync (last map write) / iptables-legacy-restore, 1000 Services"),
            Some(0.25)
        );
        assert_eq!(
            ratio("lb full sync (last map write) / nft -f, 1000 Services"),
            Some(0.5)
        );
        // Nothing measured for the change: no ratio, never a zero.
        assert_eq!(
            ratio("lb one change (last map write) / nft -f, 1000 Services"),
            None
        );
    }
}
