//! Section "cluster mode": the agent watching a real API server, as it runs
//! on a cluster. How long its first sync of N Services takes, how long one
//! EndpointSlice change takes from the controller's trigger time to the map
//! write (kube-proxy's own `network_programming_duration`, read from the
//! agent's `/metrics`), how a burst of 1,000 changes is coalesced, and the
//! agent's memory with N Services in the API server.

use std::{
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};

use crate::{
    BenchOptions,
    agent_log::{attached_at, phase_figures, synced_lines},
    cluster_agent::{Cluster, ClusterAgent},
    fixture::{expected_frontends, max_services, release_bin},
    report::Section,
};

pub const SUBJECT: &str = "lb (cluster mode)";
pub const FULL: &str = "cluster: full sync, agent start -> last map write";
pub const CHANGE: &str = "cluster: one EndpointSlice change, trigger time -> map write";
const BURST_SYNCS: &str = "cluster: syncs for a burst of changes";
const BURST_LATENCY: &str = "cluster: burst, mean trigger time -> map write";
pub const PEAK: &str = "cluster: agent peak RSS (VmHWM)";
/// Where the agent's time went (its own phase timings, from its log).
pub const FULL_PHASES: &str = "cluster: full sync, where the time went";
pub const CHANGE_PHASES: &str = "cluster: one change, where the time went";
/// The part of one change before the agent is woken.
pub const API_PATH: &str = "trigger -> agent woken (API server write, watch event)";
const LAST_QUEUED: &str = "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds";
/// What stays (the peak minus this is the full sync's transient).
const RESIDENT: &str = "cluster: agent RSS after the burst (VmRSS)";

const PROGRAMMING_COUNT: &str = "kubeproxy_network_programming_duration_seconds_count";
const PROGRAMMING_SUM: &str = "kubeproxy_network_programming_duration_seconds_sum";
const SYNC_COUNT: &str = "kubeproxy_sync_proxy_rules_duration_seconds_count";

const SYNC_LIMIT: Duration = Duration::from_secs(300);
const CHANGE_LIMIT: Duration = Duration::from_secs(60);
/// Slices the burst writes to, in parallel.
const BURST_SLICES: usize = 10;

const METHOD: &str = "A fresh API server (etcd and k8s.io/apiserver, xtask/k8s-apiserver) per \
Service count, holding this node's Node and the control-plane section's Services and \
EndpointSlices (created through the API before the agent starts). The real agent (release) in \
cluster mode, nothing attached, default --min-sync-period (1 s, kube-proxy's). Full sync = \
process spawn -> its `synced` log line after the last map write (once per count: creating the \
objects is the cost). One change: more than a second after the last sync, one slice's endpoints \
are replaced through the API with the controller's `endpoints.kubernetes.io/last-change-trigger-time` \
set to now; the figure is the agent's own `kubeproxy_network_programming_duration_seconds` \
observation (trigger time -> map write), read from `/metrics`. Burst: 1,000 changes (100 with \
--quick) to up to ten slices, written in parallel as fast as the API server takes them; the \
figures are the syncs they cost and their mean programming latency; proof is each slice's last \
endpoint set read back from the pinned maps (`lb service list`).";

pub fn run(options: &BenchOptions) -> Result<Section> {
    let mut section = Section::new("Cluster mode: the API server to the maps", METHOD);
    for services in options.service_counts(&[1, 1000, 10_000]) {
        if services > max_services() {
            section.note(format!("{services} Services: more than lb holds, skipped"));
            continue;
        }
        let started = Instant::now();
        measure_at(&mut section, options, services)
            .with_context(|| format!("cluster mode at {services} Services"))?;
        eprintln!(
            "bench: cluster mode at {services} Services in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    section.plot(
        "cluster-change.svg",
        "one EndpointSlice change through the API: trigger time -> map write",
        "ms",
        CHANGE,
    );
    Ok(section)
}

fn measure_at(section: &mut Section, options: &BenchOptions, services: usize) -> Result<()> {
    let cluster = Cluster::start(services)?;
    let spawned = SystemTime::now();
    let mut agent = ClusterAgent::start(&cluster, services)?;
    agent.wait("the first sync", SYNC_LIMIT, |a| {
        Ok(!synced_lines(&a.log()).is_empty())
    })?;
    let first = synced_lines(&agent.log())[0].clone();
    if first.frontends != expected_frontends(services) {
        bail!(
            "the first sync programmed {} frontends, expected {}",
            first.frontends,
            expected_frontends(services)
        );
    }
    let full_ms = millis_since(spawned, first.at);
    section.figure(FULL, SUBJECT, services, "ms", &[full_ms]);
    let attached = attached_at(&agent.log()).map(|at| (spawned, at));
    for (subject, ms) in phase_figures(&first, attached) {
        section.figure(FULL_PHASES, subject, services, "ms", &[ms]);
    }
    for (subject, ms) in crate::program_load::figures(&agent.log()) {
        section.figure(FULL_PHASES, subject, services, "ms", &[ms]);
    }

    let slices = change_slices(services);
    let mut latencies = Vec::new();
    let mut phases: Vec<(&str, Vec<f64>)> = Vec::new();
    let mut api = Vec::new();
    for k in 0..options.repetitions() {
        // Past --min-sync-period since the last sync: the agent's work is
        // measured, not the interval kube-proxy also waits.
        thread::sleep(Duration::from_millis(1200));
        let (latency, woken) = one_change(&cluster, &mut agent, &slices[0], k)?;
        latencies.push(latency);
        api.push(woken);
        if let Some(line) = synced_lines(&agent.log()).last() {
            for (subject, ms) in phase_figures(line, None) {
                match phases.iter_mut().find(|(s, _)| *s == subject) {
                    Some((_, samples)) => samples.push(ms),
                    None => phases.push((subject, vec![ms])),
                }
            }
        }
    }
    section.figure(CHANGE, SUBJECT, services, "ms", &latencies);
    section.figure(CHANGE_PHASES, API_PATH, services, "ms", &api);
    for (subject, samples) in &phases {
        section.figure(CHANGE_PHASES, subject, services, "ms", samples);
    }

    let changes = if options.quick { 100 } else { 1000 };
    thread::sleep(Duration::from_millis(1200));
    let (syncs, mean_ms) = burst(&cluster, &mut agent, &slices, changes)?;
    section.figure(BURST_SYNCS, SUBJECT, services, "syncs", &[syncs]);
    section.figure(BURST_LATENCY, SUBJECT, services, "ms", &[mean_ms]);
    section.note(format!(
        "{services} Services: a burst of {changes} changes to {} slices took {syncs} syncs",
        slices.len()
    ));

    let (resident, peak) = agent.memory_kib()?;
    section.figure(PEAK, SUBJECT, services, "MiB", &[peak as f64 / 1024.0]);
    section.figure(
        RESIDENT,
        SUBJECT,
        services,
        "MiB",
        &[resident as f64 / 1024.0],
    );
    Ok(())
}

/// The slices the changes go to: fillers' where there are any (the target's
/// otherwise), at most [`BURST_SLICES`].
fn change_slices(services: usize) -> Vec<String> {
    let fillers = services.saturating_sub(1).min(BURST_SLICES);
    if fillers == 0 {
        return vec!["target-1".into()];
    }
    (0..fillers).map(|i| format!("filler-{i}-1")).collect()
}

/// `count` unrouted addresses of slice number `slice` (never a ClusterIP).
fn addresses(slice: usize, count: usize) -> Vec<Ipv4Addr> {
    (1..=count)
        .map(|i| Ipv4Addr::new(10, 251, slice as u8, i as u8))
        .collect()
}

/// One change's programming latency in ms, as the agent observed it, and
/// the part of it before the agent was woken (the API server's write and
/// the watch event: trigger time -> the agent's last queued change).
fn one_change(
    cluster: &Cluster,
    agent: &mut ClusterAgent,
    slice: &str,
    k: usize,
) -> Result<(f64, f64)> {
    let (count, sum) = (
        agent.metric(PROGRAMMING_COUNT)?,
        agent.metric(PROGRAMMING_SUM)?,
    );
    let trigger = cluster.set_endpoints(slice, &addresses(200, 2 + k % 2))?;
    agent.wait("the change's map write", CHANGE_LIMIT, |a| {
        Ok(a.metric(PROGRAMMING_COUNT)? > count)
    })?;
    let observed = agent.metric(PROGRAMMING_COUNT)? - count;
    if observed != 1.0 {
        bail!("one change gave {observed} programming observations");
    }
    let latency = (agent.metric(PROGRAMMING_SUM)? - sum) * 1000.0;
    let queued = UNIX_EPOCH + Duration::from_secs_f64(agent.metric(LAST_QUEUED)?);
    Ok((latency, millis_since(trigger, queued)))
}

/// Writes `changes` endpoint changes spread over `slices` (in parallel,
/// one writer per slice), waits for the agent to settle, checks the maps
/// hold every slice's last endpoints; the syncs it cost and the mean
/// programming latency of the changes it observed.
fn burst(
    cluster: &Cluster,
    agent: &mut ClusterAgent,
    slices: &[String],
    changes: usize,
) -> Result<(f64, f64)> {
    let rounds = changes.div_ceil(slices.len());
    let last = |round: usize| 1 + round % 5;
    let syncs_before = agent.metric(SYNC_COUNT)?;
    let (count, sum) = (
        agent.metric(PROGRAMMING_COUNT)?,
        agent.metric(PROGRAMMING_SUM)?,
    );
    thread::scope(|scope| {
        let writers: Vec<_> = slices
            .iter()
            .enumerate()
            .map(|(i, slice)| {
                scope.spawn(move || -> Result<()> {
                    for round in 0..rounds {
                        cluster.set_endpoints(slice, &addresses(i, last(round)))?;
                    }
                    Ok(())
                })
            })
            .collect();
        writers
            .into_iter()
            .try_for_each(|w| w.join().map_err(|_| anyhow::anyhow!("a writer panicked"))?)
    })?;
    let expected = last(rounds - 1);
    agent.wait(
        "the burst's last endpoints in the maps",
        CHANGE_LIMIT,
        |a| holds(a, slices, expected),
    )?;
    let syncs = agent.metric(SYNC_COUNT)? - syncs_before;
    let observed = agent.metric(PROGRAMMING_COUNT)? - count;
    let mean_ms = (agent.metric(PROGRAMMING_SUM)? - sum) * 1000.0 / observed.max(1.0);
    Ok((syncs, mean_ms))
}

/// Whether the pinned maps give each slice's Service `expected` backends,
/// all from the burst's addresses.
fn holds(agent: &ClusterAgent, slices: &[String], expected: usize) -> Result<bool> {
    let out = std::process::Command::new(release_bin("lb"))
        .args(["service", "list", "-o", "json", "--pin-dir"])
        .arg(&agent.pin_dir)
        .output()?;
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    let services = listed
        .as_array()
        .context("lb service list -o json: a list")?;
    Ok(slices.iter().enumerate().all(|(i, slice)| {
        let name = slice.strip_suffix("-1").unwrap_or(slice);
        let prefix = format!("10.251.{i}.");
        services
            .iter()
            .filter(|s| s["name"] == name && s["port_name"] == "http")
            .any(|s| {
                let backends = s["frontends"][0]["backends"].as_array();
                backends.is_some_and(|b| {
                    b.len() == expected
                        && b.iter().all(|be| {
                            be["address"]
                                .as_str()
                                .is_some_and(|a| a.starts_with(&prefix))
                        })
                })
            })
    }))
}

fn millis_since(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_go_to_fillers_or_else_the_target() {
        assert_eq!(change_slices(1), vec!["target-1"]);
        assert_eq!(change_slices(3), vec!["filler-0-1", "filler-1-1"]);
        assert_eq!(change_slices(10_000).len(), BURST_SLICES);
    }

    #[test]
    fn burst_addresses_are_distinct_per_slice_and_never_cluster_ips() {
        let a = addresses(0, 5);
        let b = addresses(1, 5);
        assert_eq!(a.len(), 5);
        assert!(a.iter().all(|x| !b.contains(x)));
        assert!(a.iter().all(|x| x.octets()[..2] == [10, 251]));
    }
}
