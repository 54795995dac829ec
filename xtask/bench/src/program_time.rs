//! What the XDP program on a node's `ext0` itself costs a frame in live
//! traffic, by the kernel's own accounting (`BPF_ENABLE_STATS`: each run
//! of a program adds its time to the program's `run_time_ns` while some
//! process holds the statistics on). The throughput section takes one
//! extra run of each case with them on, after its interleaved repetitions
//! (the accounting costs two clock reads a run, so no reported rate is
//! measured with it), for the subjects that run an XDP program there: lb,
//! the limit and the ceiling. `throughput_reasons` then splits lb's gap to
//! the ceiling into its program's time and the rest of the frame's path.

use std::os::fd::OwnedFd;

use anyhow::{Context, Result};
use aya::{
    programs::{ProgramInfo, loaded_programs},
    sys::{Stats, enable_stats},
};

/// The figure: nanoseconds of program time a frame, per case.
pub const FIGURE: &str = "XDP program time a frame, live (kernel's BPF stats)";

/// Program run statistics on while this lives.
pub struct RunStats {
    _on: OwnedFd,
}

impl RunStats {
    pub fn on() -> Result<RunStats> {
        let fd = enable_stats(Stats::RunTime)
            .context("BPF_ENABLE_STATS (kernel 5.8 or later, CAP_SYS_ADMIN)")?;
        Ok(RunStats { _on: fd })
    }

    /// Runs and total run time (ns) the program `id` has accounted so far.
    pub fn read(&self, id: u32) -> Result<Totals> {
        let info = loaded_programs()
            .filter_map(Result::ok)
            .find(|info| info.id() == id)
            .with_context(|| format!("no loaded program with id {id}"))?;
        Ok(totals(&info))
    }
}

fn totals(info: &ProgramInfo) -> Totals {
    Totals {
        runs: info.run_count(),
        ns: info.run_time().as_nanos() as u64,
    }
}

/// A program's accounted runs and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Totals {
    pub runs: u64,
    pub ns: u64,
}

impl Totals {
    /// Nanoseconds a run between `self` (before) and `after`; `None`
    /// without runs.
    pub fn per_run_until(self, after: Totals) -> Option<f64> {
        let runs = after.runs.checked_sub(self.runs)?;
        let ns = after.ns.checked_sub(self.ns)?;
        (runs > 0).then(|| ns as f64 / runs as f64)
    }
}

/// The id of the XDP program attached to the link `ip -j link show`
/// printed as `link`: `xdp.prog.id`, or the first of `xdp.attached`
/// (several modes at once).
pub fn xdp_program_id(link: &serde_json::Value) -> Option<u32> {
    let xdp = link.get("xdp")?;
    let prog = xdp
        .get("prog")
        .or_else(|| xdp.pointer("/attached/0/prog"))?;
    prog.get("id")?.as_u64()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_s_time_is_the_difference_over_the_runs_between() {
        let before = Totals {
            runs: 100,
            ns: 5_000,
        };
        let after = Totals {
            runs: 1_100,
            ns: 505_000,
        };
        assert_eq!(before.per_run_until(after), Some(500.0));
        assert_eq!(before.per_run_until(before), None, "no runs between");
        assert_eq!(after.per_run_until(before), None, "counters never go back");
    }

    #[test]
    fn the_program_id_comes_from_either_form_of_ip_s_json() {
        let single = serde_json::json!({"ifname": "ext0", "xdp": {"mode": 1, "prog": {"id": 42}}});
        assert_eq!(xdp_program_id(&single), Some(42));
        let multi =
            serde_json::json!({"xdp": {"mode": 4, "attached": [{"mode": 1, "prog": {"id": 7}}]}});
        assert_eq!(xdp_program_id(&multi), Some(7));
        assert_eq!(xdp_program_id(&serde_json::json!({"ifname": "ext0"})), None);
    }
}
