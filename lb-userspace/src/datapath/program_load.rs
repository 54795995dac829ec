//! Loading (verifying) the programs the agent attaches, timed one by one.
//!
//! The kernel's verifier is most of a start-up's load time, and each
//! `BPF_PROG_LOAD` runs on the calling thread: `lb_xdp_ingress`, by far
//! the longest, is verified on a thread of its own while this one verifies
//! the others, so on a machine with two free cores the load takes about as
//! long as `lb_xdp_ingress` alone. Each program's own time is kept
//! ([`ProgramLoadTime`]): the agent logs it, and the bench reports it.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    programs::{Program, ProgramError},
};

use super::object::{
    CGROUP_PROGRAMS, PROG_SOCK_EGRESS, PROG_TC_EGRESS, PROG_TC_POD_INGRESS, PROG_XDP_INGRESS,
};

/// How long the kernel took to load (verify) one program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramLoadTime {
    pub program: &'static str,
    pub took: Duration,
}

/// Every program the agent attaches, in load order on each thread: the
/// XDP program on its own thread, the others here.
const OTHERS: [&str; 7] = [
    PROG_TC_EGRESS,
    PROG_TC_POD_INGRESS,
    CGROUP_PROGRAMS[0],
    CGROUP_PROGRAMS[1],
    CGROUP_PROGRAMS[2],
    CGROUP_PROGRAMS[3],
    PROG_SOCK_EGRESS,
];

/// Loads (verifies) every program the agent attaches: `lb_xdp_ingress` on
/// a thread of its own, the others meanwhile. The time each took, XDP
/// first.
pub(super) fn load_attachable_programs(ebpf: &mut Ebpf) -> Result<Vec<ProgramLoadTime>> {
    let mut xdp = None;
    let mut others = Vec::with_capacity(OTHERS.len());
    for (name, program) in ebpf.programs_mut() {
        if name == PROG_XDP_INGRESS {
            xdp = Some(program);
        } else if let Some(known) = OTHERS.iter().find(|known| **known == name) {
            others.push((*known, program));
        }
    }
    let xdp =
        xdp.ok_or_else(|| anyhow!("program {PROG_XDP_INGRESS} missing from the datapath object"))?;
    for name in OTHERS {
        if !others.iter().any(|(known, _)| *known == name) {
            return Err(anyhow!("program {name} missing from the datapath object"));
        }
    }
    let (xdp_time, others) = std::thread::scope(|scope| {
        let xdp = scope.spawn(move || load_timed(PROG_XDP_INGRESS, xdp));
        let others: Result<Vec<_>> = others
            .into_iter()
            .map(|(name, program)| load_timed(name, program))
            .collect();
        let xdp = xdp
            .join()
            .map_err(|_| anyhow!("the thread loading {PROG_XDP_INGRESS} panicked"));
        (xdp, others)
    });
    let mut all = vec![xdp_time??];
    all.extend(others?);
    Ok(all)
}

/// Loads one program of the types the agent attaches, timing the kernel's
/// load.
fn load_timed(name: &'static str, program: &mut Program) -> Result<ProgramLoadTime> {
    let started = Instant::now();
    let loaded: Result<(), ProgramError> = match program {
        Program::Xdp(p) => p.load(),
        Program::SchedClassifier(p) => p.load(),
        Program::CgroupSockAddr(p) => p.load(),
        Program::CgroupSkb(p) => p.load(),
        _ => return Err(anyhow!("program {name} has an unexpected type")),
    };
    loaded.with_context(|| format!("loading {name}"))?;
    Ok(ProgramLoadTime {
        program: name,
        took: started.elapsed(),
    })
}

/// The load times as the agent logs them: `<program>_us=<µs>` each.
pub fn log_fields(times: &[ProgramLoadTime]) -> String {
    times
        .iter()
        .map(|t| format!("{}_us={}", t.program, t.took.as_micros()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_times_are_logged_as_one_field_per_program_in_microseconds() {
        let times = [
            ProgramLoadTime {
                program: PROG_XDP_INGRESS,
                took: Duration::from_micros(250_400),
            },
            ProgramLoadTime {
                program: PROG_TC_EGRESS,
                took: Duration::from_micros(21_000),
            },
        ];
        assert_eq!(
            log_fields(&times),
            "lb_xdp_ingress_us=250400 lb_tc_egress_us=21000"
        );
    }
}
