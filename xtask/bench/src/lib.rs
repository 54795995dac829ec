//! `cargo xtask bench`: where lb stands against kube-proxy and against the
//! limit, measured side by side in one run (design.md section 7), written
//! as a report with plots and the raw numbers.
//!
//! Each section measures one thing and fills a [`report::Section`]; the
//! repetitions of a section are interleaved (A B C, A B C, ...) so that a
//! noisy neighbour slows every subject alike and the ratios hold.

pub mod agent_log;
pub mod bpf_asm;
pub mod cluster_agent;
pub mod cluster_mode;
pub mod control_agent;
pub mod control_plane;
pub mod fixture;
pub mod forwarding;
pub mod frames;
pub mod heap;
pub mod known_flow;
pub mod kube_proxy_changes;
pub mod kube_proxy_mode;
pub mod kube_proxy_rules;
pub mod live_frames;
pub mod map_probes;
pub mod packet_streams;
pub mod per_packet;
pub mod program_load;
pub mod program_time;
pub mod raw_bpf;
pub mod report;
pub mod rule_loads;
pub mod stateless_dnat;
pub mod stats;
pub mod sync_work;
pub mod targets;
pub mod throughput;
pub mod throughput_nodes;
pub mod throughput_reasons;
pub mod udp_probe;

use std::path::PathBuf;

use anyhow::Result;

use self::report::{Machine, Report};

/// What `cargo xtask bench` was asked for.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// A reduced set that proves every section still works, in a minute or
    /// two (CI runs it; its numbers mean little).
    pub quick: bool,
    /// Where the run's directory goes.
    pub out: PathBuf,
}

impl BenchOptions {
    /// Interleaved repetitions of every measurement.
    pub fn repetitions(&self) -> usize {
        if self.quick { 1 } else { 3 }
    }

    /// The Service counts each scaling section runs at.
    pub fn service_counts(&self, full: &[usize]) -> Vec<usize> {
        // sync: `LB_BENCH_SERVICES=10000` (comma-separated) keeps only
        // those of a section's counts, to measure one size quickly.
        if let Some(only) = only_services() {
            return full.iter().copied().filter(|n| only.contains(n)).collect();
        }
        if self.quick {
            full.iter()
                .copied()
                .filter(|&n| n <= 1000)
                .take(2)
                .collect()
        } else {
            full.to_vec()
        }
    }
}

/// The Service counts `LB_BENCH_SERVICES` names, if set.
fn only_services() -> Option<Vec<usize>> {
    let only = std::env::var("LB_BENCH_SERVICES").ok()?;
    Some(
        only.split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect(),
    )
}

/// Whether `LB_BENCH_LB_ONLY=1` asks to skip kube-proxy's rule loads (the
/// control-plane section then measures the agent alone).
pub fn lb_only() -> bool {
    std::env::var("LB_BENCH_LB_ONLY").is_ok_and(|v| v == "1")
}

/// Runs every section and writes the report; returns the report's path.
pub fn run(options: &BenchOptions) -> Result<PathBuf> {
    let date = today();
    let mut sections = Vec::new();
    if wanted("per-packet") {
        sections.push(per_packet::run(options));
    }
    if wanted("throughput") {
        sections.push(throughput::section(options)?);
    }
    if wanted("forwarding") {
        sections.push(forwarding::section(options)?);
    }
    if wanted("control-plane") {
        sections.push(control_plane::run(options)?);
    }
    if wanted("cluster-mode") {
        sections.push(cluster_mode::run(options)?);
    }
    if wanted("sync-work") {
        sections.push(sync_work::run(options)?);
    }
    if wanted("heap") {
        sections.push(heap::run(options)?);
    }
    if wanted("targets") {
        let targets = targets::section(&sections);
        sections.push(targets);
    }
    let report = Report {
        date: date.clone(),
        quick: options.quick,
        repetitions: options.repetitions(),
        machine: Machine::this(),
        sections,
    };
    report.write(&options.out.join(&date))
}

/// Whether `LB_BENCH_ONLY` (comma-separated section names; unset = all)
/// asks for the section `name`.
fn wanted(name: &str) -> bool {
    std::env::var("LB_BENCH_ONLY").map_or(true, |only| only.split(',').any(|s| s == name))
}

/// The UTC date, `YYYY-MM-DD`, without a date crate.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    civil_date(secs / 86_400)
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_date(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(20_788), "2026-12-01");
        assert_eq!(civil_date(11_016), "2000-02-29");
    }

    #[test]
    fn quick_runs_a_reduced_set() {
        let quick = BenchOptions {
            quick: true,
            out: PathBuf::new(),
        };
        assert_eq!(
            quick.service_counts(&[1, 1000, 10_000, 100_000]),
            vec![1, 1000]
        );
        assert_eq!(quick.repetitions(), 1);
        let full = BenchOptions {
            quick: false,
            out: PathBuf::new(),
        };
        assert_eq!(full.service_counts(&[1, 10_000]), vec![1, 10_000]);
    }
}
