//! `BPF_PROG_TEST_RUN`: running a program on a crafted frame, once (tests,
//! `lb trace`) or `repeat` times with the kernel's own timing (benchmarks).
//! A test run touches no interface but uses, and updates, the maps the
//! program was loaded with.
//!
//! Besides the programs of a [`Datapath`], [`LiveProgram`] runs a program
//! someone else loaded, found by id or by the link it is pinned in: the
//! agent's, over the live maps.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result, bail};
use aya::programs::{
    ProgramInfo, SchedClassifier, TestRun, TestRunOptions, TestRunResult, Xdp, loaded_programs,
};
use aya_obj::programs::XdpAttachType;

use super::{loader::Datapath, pins};

/// Room for anything the program might grow the frame by.
const HEADROOM: usize = 256;

/// What one `BPF_PROG_TEST_RUN` reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The program's return value (an XDP action, a tc verdict).
    pub return_value: u32,
    /// The frame as the last run left it.
    pub packet_out: Vec<u8>,
    /// The mean time of one run, as the kernel measured it over all
    /// `repeat` runs (`duration`, in nanoseconds).
    pub duration: Duration,
}

impl TestRunOutcome {
    /// The return value as a tc verdict (`TC_ACT_*`, `TCX_NEXT` is -1).
    pub fn tc_verdict(&self) -> i32 {
        self.return_value as i32
    }
}

/// Runs `prog` on `frame` `repeat` times in the kernel (0 counts as 1).
pub fn test_run<P>(prog: &P, frame: &[u8], repeat: u32) -> Result<TestRunOutcome>
where
    for<'a> P: TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let mut out = vec![0u8; frame.len() + HEADROOM];
    let result = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    out.truncate(result.data_size_out as usize);
    Ok(TestRunOutcome {
        return_value: result.return_value,
        packet_out: out,
        duration: result.duration,
    })
}

impl Datapath {
    /// Runs the XDP program once on `frame` (`BPF_PROG_TEST_RUN`; touches no
    /// interface, but does use and update the live maps). Returns the
    /// action and the frame as the program left it.
    pub fn run_xdp(&self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let outcome = self.test_run_xdp(frame, 1)?;
        Ok((outcome.return_value, outcome.packet_out))
    }

    /// Runs the XDP program once on `frame` as if it arrived on the device
    /// `ingress_ifindex` (of the calling thread's network namespace): what
    /// the FIB lookup of forwarding in XDP starts from.
    pub fn run_xdp_from(&self, frame: &[u8], ingress_ifindex: u32) -> Result<(u32, Vec<u8>)> {
        // `struct xdp_md`: data, data_end (the frame's length: the kernel
        // checks it), data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex (must be 0).
        let md: [u32; 6] = [0, frame.len() as u32, 0, ingress_ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|word| word.to_ne_bytes()).collect();
        let mut out = vec![0u8; frame.len() + HEADROOM];
        let result = self
            .xdp_program()?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..Default::default()
            })
            .context("BPF_PROG_TEST_RUN")?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out))
    }

    /// Runs the XDP program `repeat` times on `frame` (see [`Self::run_xdp`]).
    pub fn test_run_xdp(&self, frame: &[u8], repeat: u32) -> Result<TestRunOutcome> {
        test_run(self.xdp_program()?, frame, repeat)
    }

    /// Runs the tc egress program once on `frame` (see [`Self::run_xdp`]).
    /// Returns the tc verdict and the frame.
    pub fn run_tc_egress(&self, frame: &[u8]) -> Result<(i32, Vec<u8>)> {
        let outcome = self.test_run_tc_egress(frame, 1)?;
        Ok((outcome.tc_verdict(), outcome.packet_out))
    }

    /// Runs the tc egress program `repeat` times on `frame`.
    pub fn test_run_tc_egress(&self, frame: &[u8], repeat: u32) -> Result<TestRunOutcome> {
        test_run(self.tc_egress_program()?, frame, repeat)
    }

    /// Runs the pod hook once on `frame` (see [`Self::run_xdp`]).
    pub fn run_tc_pod_ingress(&self, frame: &[u8]) -> Result<(i32, Vec<u8>)> {
        let outcome = test_run(self.tc_pod_ingress_program()?, frame, 1)?;
        Ok((outcome.tc_verdict(), outcome.packet_out))
    }

    /// Runs the socket-decision trace program once on `frame` (see
    /// [`Self::run_xdp`]).
    pub fn run_trace_socket(&self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let outcome = test_run(self.trace_socket_program()?, frame, 1)?;
        Ok((outcome.return_value, outcome.packet_out))
    }
}

/// A program loaded by another process (the agent), held by a new file
/// descriptor: running it runs what the attached link runs, on the maps it
/// was loaded with.
#[derive(Debug)]
pub enum LiveProgram {
    Xdp(Xdp),
    Tc(SchedClassifier),
}

impl LiveProgram {
    /// The loaded program with kernel id `id` (an XDP or tc program).
    pub fn from_id(id: u32) -> Result<LiveProgram> {
        let info = find_program(id)?;
        let name = info.name_as_str().unwrap_or_default().to_owned();
        let kind = info.program_type();
        if kind == Xdp::PROGRAM_TYPE.into() {
            let prog = Xdp::from_program_info(info, name.into(), XdpAttachType::Interface)?;
            Ok(Self::Xdp(prog))
        } else if kind == SchedClassifier::PROGRAM_TYPE.into() {
            Ok(Self::Tc(SchedClassifier::from_program_info(
                info,
                name.into(),
            )?))
        } else {
            bail!(
                "program {id} ({name}) is neither an XDP nor a tc program: it cannot be test-run on a frame"
            )
        }
    }

    /// The program the link pinned at `pin` runs (e.g.
    /// `<pin_dir>/links/lb_xdp_ingress@eth0`).
    pub fn from_pinned_link(pin: &Path) -> Result<LiveProgram> {
        let link = pins::open_pinned_link(pin)?.with_context(|| {
            format!(
                "no link pinned at {}: is the agent running and attached there?",
                pin.display()
            )
        })?;
        let info = link
            .info()
            .with_context(|| format!("reading the link pinned at {}", pin.display()))?;
        Self::from_id(info.program_id())
    }

    /// The program's kernel id.
    pub fn id(&self) -> Result<u32> {
        let info = match self {
            Self::Xdp(prog) => prog.info(),
            Self::Tc(prog) => prog.info(),
        };
        Ok(info.context("reading the program's info")?.id())
    }

    /// Runs the program `repeat` times on `frame`.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<TestRunOutcome> {
        match self {
            Self::Xdp(prog) => test_run(prog, frame, repeat),
            Self::Tc(prog) => test_run(prog, frame, repeat),
        }
    }
}

/// Looks `id` up among the loaded programs. Programs unloaded while the
/// list is walked are skipped; any other failure (no privilege) is
/// reported if the program is not found.
fn find_program(id: u32) -> Result<ProgramInfo> {
    let mut first_error = None;
    for info in loaded_programs() {
        match info {
            Ok(info) if info.id() == id => return Ok(info),
            Ok(_) => {}
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    match first_error {
        Some(err) => Err(err).with_context(|| {
            format!(
                "no program with id {id} found, and some loaded programs could not be listed (listing them needs root)"
            )
        }),
        None => bail!("no program with id {id} is loaded"),
    }
}
