//! Section 1: what one packet costs on each path of lb's datapath, under
//! BPF_PROG_TEST_RUN on the programs the agent loaded, over the maps it
//! filled, as the Service count grows; beside the floor (an XDP_PASS
//! program: the test run's own cost) and the limit (a stateless DNAT of
//! one frontend to one backend, the least a load balancer can do).

use std::{net::SocketAddrV4, time::Instant};

use anyhow::{Context, Result};
use lb::datapath::KernelMaps;
use lb_common::reason::Reason;
use xtask::testbed::{NODE_ADDR, POD_TCP_PORT, pod_addr};

use crate::{
    BenchOptions,
    bpf_asm::{Alu, Asm, R0},
    fixture::{
        AgentUnderTest, EMPTY_NODE_PORT, PODS, REMOTE_NODE_PORT, REMOTE_PODS, TARGET_TCP_NODE_PORT,
        max_services, remote_pod_addr,
    },
    frames,
    known_flow::{self, KNOWN_CLIENT},
    map_probes,
    packet_streams::{Expect, Frames, LB, Program, Stream, TCX_NEXT, XDP_PASS},
    raw_bpf::{Hook, RawProgram},
    report::Section,
    stateless_dnat::{self, StatelessDnat},
};

pub use crate::report::label;
use crate::report::thousands;

pub const TITLE: &str = "Per-packet cost (BPF_PROG_TEST_RUN)";
const SIZES: [usize; 4] = [1, 1_000, 10_000, 100_000];
const UNIT: &str = "ns/packet";

pub const NEW_FLOW: &str = "new flow";
pub const MASQUERADED: &str = "new flow, masqueraded (remote backend)";
pub const ESTABLISHED: &str = "established flow";
pub const REPLY: &str = "reply (tc egress)";
pub const NOT_A_SERVICE: &str = "not a service";
/// A TCP segment that is no SYN to a port no frontend has: what traffic
/// to the node that is no Service's pays for the established fast path.
pub const NOT_A_SERVICE_ACK: &str = "not a service, TCP ACK";
pub const REJECTED: &str = "rejected (ICMP)";
/// The paths of lb, in the order they are measured.
const PATHS: [&str; 6] = [
    NEW_FLOW,
    ESTABLISHED,
    REPLY,
    NOT_A_SERVICE,
    REJECTED,
    NOT_A_SERVICE_ACK,
];
pub const FLOOR: &str = "XDP_PASS floor";
pub const TC_FLOOR: &str = "tc floor";
pub const LIMIT: &str = "stateless DNAT limit";

pub(crate) fn node_port(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(NODE_ADDR, port)
}

pub(crate) fn pods() -> Vec<SocketAddrV4> {
    (0..PODS)
        .map(|i| SocketAddrV4::new(pod_addr(i), POD_TCP_PORT))
        .collect()
}

/// Test runs per sample.
fn calls(options: &BenchOptions) -> u32 {
    if options.quick { 200 } else { 2_000 }
}

fn method(calls: u32) -> String {
    format!(
        "Each path runs on the program the agent attached (XDP ingress, tc egress for replies) over the maps it filled, by BPF_PROG_TEST_RUN with repeat 1 and a fresh frame per call (the programs rewrite the frame, and a repeat would rerun the rewritten one); one sample is the mean of the kernel's own `duration` over {calls} calls. All traffic is external TCP from clients 198.51.100.x to the NodePort {}: a new flow is a new 5-tuple every call, an established flow the same 5-tuple after its handshake (the client's SYN and ACK through XDP, the pod's SYN-ACK through tc egress: an assured flow, in the table of assured flows, as every established connection is), a reply the backend's answer to it through tc egress, not a service a port no frontend has, rejected the NodePort {EMPTY_NODE_PORT} of a Service without endpoints (ICMP port unreachable, XDP_TX, within the per-CPU reject budget of 50 then 1,000/s; over it, a counted XDP_DROP, which is what most calls of this stream are). Beside them, measured the same way on new-flow frames: an XDP_PASS program (the floor: what an XDP test run costs with no work) and the bench's own stateless DNAT of one frontend to one backend in raw eBPF (the limit: parse, match, rewrite, incremental checksums); on the reply frames, a tc program that only returns TCX_NEXT (the floor of a tc test run). Every output is checked (verdict; addresses, ports and checksums by etherparse) and the agent's counter of each path must rise by the number of calls, else the path has no figure. {} Streams and programs are interleaved in each repetition.",
        node_port(TARGET_TCP_NODE_PORT),
        map_probes::METHOD
    )
}

/// The bench's own programs, loaded once and proven before any figure.
struct Baselines {
    floor: RawProgram,
    tc_floor: RawProgram,
    limit: Option<(StatelessDnat, RawProgram)>,
}

fn load_baselines(section: &mut Section) -> Result<Baselines> {
    let floor = RawProgram::from_fd(xtask::xdp_pass::load()?);
    let mut tc_pass = Asm::new();
    tc_pass.alu(Alu::Mov, R0, TCX_NEXT).exit();
    let tc_pass = tc_pass.finish().map_err(anyhow::Error::msg)?;
    let tc_floor = RawProgram::load(Hook::Tc, "bench_tc_pass", &tc_pass)
        .context("loading the tc floor program")?;
    let limit = match proven_limit() {
        Ok(limit) => Some(limit),
        Err(err) => {
            section.note(format!(
                "The stateless DNAT limit has no figures: its correctness check failed: {err:#}"
            ));
            None
        }
    };
    Ok(Baselines {
        floor,
        tc_floor,
        limit,
    })
}

/// Loads the limit program for TCP (measured) and UDP (checked only), and
/// proves both translate right.
fn proven_limit() -> Result<(StatelessDnat, RawProgram)> {
    let backend = pods()[0];
    let udp = StatelessDnat {
        tcp: false,
        frontend: node_port(TARGET_TCP_NODE_PORT),
        backend,
        redirect: None,
    };
    stateless_dnat::check(&udp, &udp.load()?).context("the UDP variant")?;
    let tcp = StatelessDnat { tcp: true, ..udp };
    let prog = tcp.load()?;
    stateless_dnat::check(&tcp, &prog).context("the TCP variant")?;
    Ok((tcp, prog))
}

/// Runs the section.
pub fn run(options: &BenchOptions) -> Section {
    let calls = calls(options);
    let mut section = Section::new(TITLE, &method(calls));
    let baselines = match load_baselines(&mut section) {
        Ok(baselines) => baselines,
        Err(err) => {
            section.note(format!(
                "Nothing measured: {err:#} (loading programs needs root and bpf(2): run `cargo xtask bench` as root)"
            ));
            return section;
        }
    };
    let mut measured = Vec::new();
    for services in options.service_counts(&SIZES) {
        if services > max_services() {
            section.note(format!(
                "{}: not measured, lb's maps hold at most {} Services of the bench's shape (MAX_SERVICES service ports).",
                label(services),
                thousands(max_services())
            ));
            continue;
        }
        let started = Instant::now();
        let aut = match AgentUnderTest::start(services) {
            Ok(aut) => aut,
            Err(err) => {
                section.note(format!(
                    "{}: the agent did not start: {err:#}",
                    label(services)
                ));
                continue;
            }
        };
        section.note(format!(
            "{}: the agent was up, every frontend programmed, {:.1} s after the start.",
            label(services),
            started.elapsed().as_secs_f64()
        ));
        match measure(
            &aut,
            &baselines,
            services,
            calls,
            options.repetitions(),
            &mut section,
        ) {
            Ok(()) => measured.push(services),
            Err(err) => section.note(format!("{}: not measured: {err:#}", label(services))),
        }
    }
    compare(&mut section, &measured);
    section
}

/// Every stream at one Service count, `repetitions` interleaved rounds.
fn measure(
    aut: &AgentUnderTest,
    baselines: &Baselines,
    services: usize,
    calls: u32,
    repetitions: usize,
    section: &mut Section,
) -> Result<()> {
    let maps = KernelMaps::open_pinned(&aut.bed.pin_dir).context("opening the agent's maps")?;
    let xdp = aut.xdp_program()?;
    let tc = aut.tc_egress_program()?;
    let backend = known_flow::open(&xdp, &tc, &maps)?;
    let target = node_port(TARGET_TCP_NODE_PORT);
    let new_flows = |to| Frames::NewFlows { next: 0, to };
    let reply = frames::tcp(backend, KNOWN_CLIENT, false);
    let passed = || Expect::Unchanged { verdict: XDP_PASS };
    let floor = Program::Bench(&baselines.floor);
    let tc_floor = Program::Bench(&baselines.tc_floor);
    let (xdp, tc) = (Program::Agent(&xdp), Program::Agent(&tc));
    // Loaded at each Service count: the inserts' keys are new in every run.
    let probes = map_probes::load().unwrap_or_else(|err| {
        let at = label(services);
        section.note(format!("{at}: the map probes have no figures: {err:#}"));
        Vec::new()
    });
    let mut streams = vec![
        Stream::bench(NEW_FLOW, FLOOR, floor, new_flows(target), passed()),
        Stream::lb(
            NEW_FLOW,
            xdp,
            new_flows(target),
            Expect::Dnat { to: pods() },
            Reason::DnatNew,
        ),
        Stream::lb(
            MASQUERADED,
            xdp,
            new_flows(node_port(REMOTE_NODE_PORT)),
            Expect::Masquerade {
                to: (0..REMOTE_PODS)
                    .map(|i| SocketAddrV4::new(remote_pod_addr(i), POD_TCP_PORT))
                    .collect(),
                node: NODE_ADDR,
            },
            Reason::DnatNew,
        ),
        Stream::lb(
            ESTABLISHED,
            xdp,
            Frames::Same(frames::tcp(KNOWN_CLIENT, target, false)),
            Expect::Dnat { to: vec![backend] },
            Reason::DnatEstablished,
        ),
        Stream::bench(
            REPLY,
            TC_FLOOR,
            tc_floor,
            Frames::Same(reply.clone()),
            Expect::Unchanged {
                verdict: TCX_NEXT as u32,
            },
        ),
        Stream::lb(
            REPLY,
            tc,
            Frames::Same(reply),
            Expect::ReverseNat { from: target },
            Reason::ReverseNat,
        ),
        Stream::lb(
            NOT_A_SERVICE,
            xdp,
            new_flows(node_port(TARGET_TCP_NODE_PORT + 1)),
            passed(),
            Reason::PassNoService,
        ),
        Stream::lb(
            REJECTED,
            xdp,
            new_flows(node_port(EMPTY_NODE_PORT)),
            Expect::Reject,
            Reason::RejectNoEndpoints,
        )
        .or_counted(Reason::DropRejectRateLimited),
    ];
    streams.push(Stream::lb(
        NOT_A_SERVICE_ACK,
        xdp,
        Frames::Same(frames::tcp(
            KNOWN_CLIENT,
            node_port(TARGET_TCP_NODE_PORT + 1),
            false,
        )),
        passed(),
        Reason::PassNoService,
    ));
    streams.extend(map_probes::streams(&probes, || new_flows(target)));
    if let Some((dnat, prog)) = &baselines.limit {
        let to = vec![dnat.backend];
        let limit = Stream::bench(
            NEW_FLOW,
            LIMIT,
            Program::Bench(prog),
            new_flows(target),
            Expect::Dnat { to },
        );
        streams.insert(1, limit);
    }
    for _ in 0..repetitions {
        for stream in &mut streams {
            stream.batch(calls, &maps);
        }
    }
    for stream in &streams {
        record(section, stream, services);
    }
    if streams.iter().all(|s| s.failure.is_none()) {
        section.note(format!(
            "{}: proof held for all {} test runs: every output as expected, and dnat_new, dnat_established, reverse_nat, pass_no_service and reject_no_endpoints rose by exactly the calls of their paths.",
            label(services),
            thousands(streams.len() * repetitions * calls as usize)
        ));
    }
    Ok(())
}

/// Sends the known flow's first packet (a new flow) and returns the
/// backend it was given.
fn record(section: &mut Section, stream: &Stream, services: usize) {
    if let Some(failure) = &stream.failure {
        section.note(format!(
            "{}, {} of {}: no figure, the proof failed: {failure}",
            label(services),
            stream.case,
            stream.subject
        ));
        return;
    }
    section.figure(stream.case, stream.subject, services, UNIT, &stream.samples);
    if stream.subject == LB && stream.case == NEW_FLOW {
        let spread: Vec<String> = stream
            .chosen
            .iter()
            .map(|(pod, n)| format!("{pod}: {n}"))
            .collect();
        section.note(format!(
            "{}, new flows by the backend chosen: {}.",
            label(services),
            spread.join(", ")
        ));
    }
}

/// Ratios to the floors and the limit, the growth with the Service count,
/// and a plot per path.
fn compare(section: &mut Section, measured: &[usize]) {
    for &n in measured {
        let at = label(n);
        for path in PATHS {
            // Each path against its own hook's floor, and all against the
            // limit (the least a rewrite with checksums costs).
            let floor = if path == REPLY {
                (REPLY, TC_FLOOR)
            } else {
                (NEW_FLOW, FLOOR)
            };
            for (case, base) in [floor, (NEW_FLOW, LIMIT)] {
                let label = format!("lb {path} / {base}, {at}");
                section.ratio(&label, (path, LB, n), (case, base, n));
            }
        }
    }
    if let (Some(&first), Some(&last)) = (measured.first(), measured.last())
        && first != last
    {
        for path in PATHS {
            section.ratio(
                &format!("lb {path}, {} / {}", label(last), label(first)),
                (path, LB, last),
                (path, LB, first),
            );
        }
    }
    for path in PATHS {
        section.plot(
            &format!("per-packet-{}.svg", slug(path)),
            &format!("{path}: ns per packet"),
            UNIT,
            path,
        );
    }
    section.note(
        "A floor is what a test run costs around a program that does nothing (context setup, the kernel's timer): a path's own work is roughly its figure less its floor. The reply runs on tc, so its floor is the tc one (the kernel builds a tc test run's skb before its timer starts, so the two floors are close); the limit is an XDP program, but its rewrite of one address and port with two checksums is the reply's work too.",
    );
}

/// A file-name form of a case: lower case, words joined by dashes.
fn slug(case: &str) -> String {
    case.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("-")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_read_as_counts() {
        assert_eq!(label(1), "1 Service");
        assert_eq!(label(1000), "1,000 Services");
        assert_eq!(label(16_381), "16,381 Services");
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(999), "999");
    }

    #[test]
    fn plot_files_are_distinct_slugs() {
        let slugs: Vec<String> = PATHS.iter().map(|p| slug(p)).collect();
        assert_eq!(slugs[2], "reply-tc-egress");
        let mut unique = slugs.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), PATHS.len());
    }

    #[test]
    fn the_known_flow_is_no_new_flow() {
        let highest_port = (0..253 * 64_000u64)
            .step_by(253)
            .map(|k| frames::client(k).port())
            .max();
        assert!(highest_port < Some(KNOWN_CLIENT.port()));
    }

    #[test]
    fn ratios_compare_each_path_to_its_floor_and_the_limit() {
        let mut section = Section::new(TITLE, "");
        for n in [1, 1000] {
            section.figure(NEW_FLOW, FLOOR, n, UNIT, &[50.0]);
            section.figure(NEW_FLOW, LIMIT, n, UNIT, &[80.0]);
            section.figure(NEW_FLOW, LB, n, UNIT, &[200.0 + n as f64 / 10.0]);
            section.figure(REPLY, LB, n, UNIT, &[100.0]);
            section.figure(REPLY, TC_FLOOR, n, UNIT, &[90.0]);
        }
        compare(&mut section, &[1, 1000]);
        let ratio = |label: &str| {
            let found = section.ratios.iter().find(|(l, _)| l == label);
            found.map(|(_, r)| *r)
        };
        let new_flow = "lb new flow / XDP_PASS floor, 1 Service";
        assert_eq!(ratio(new_flow), Some(200.1 / 50.0));
        let new_flow = "lb new flow / stateless DNAT limit, 1,000 Services";
        assert_eq!(ratio(new_flow), Some(300.0 / 80.0));
        let reply = "lb reply (tc egress) / tc floor, 1,000 Services";
        assert_eq!(ratio(reply), Some(100.0 / 90.0));
        let growth = "lb new flow, 1,000 Services / 1 Service";
        assert_eq!(ratio(growth), Some(300.0 / 200.1));
        // The reply is not held against XDP's floor; unmeasured paths give
        // no ratio.
        assert_eq!(
            ratio("lb reply (tc egress) / XDP_PASS floor, 1 Service"),
            None
        );
        assert_eq!(
            ratio("lb rejected (ICMP) / XDP_PASS floor, 1 Service"),
            None
        );
        assert_eq!(section.plots.len(), PATHS.len());
    }
}
