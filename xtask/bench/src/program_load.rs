//! Reading the agent's program load times from its log: at start it logs
//! `programs verified` with `<program>_us=<µs>` for each program it
//! attaches (`lb::datapath::program_load`), so "spawn -> datapath
//! attached" can say how much of it the kernel's verifier took, program by
//! program (`lb_xdp_ingress` is verified on a thread of its own beside the
//! others: the figures overlap).

/// The programs the agent logs, and each one's figure subject.
pub const PROGRAMS: [(&str, &str); 8] = [
    ("lb_xdp_ingress", "program load: lb_xdp_ingress (verifier)"),
    ("lb_tc_egress", "program load: lb_tc_egress (verifier)"),
    (
        "lb_tc_pod_ingress",
        "program load: lb_tc_pod_ingress (verifier)",
    ),
    ("lb_connect4", "program load: lb_connect4 (verifier)"),
    ("lb_sendmsg4", "program load: lb_sendmsg4 (verifier)"),
    ("lb_recvmsg4", "program load: lb_recvmsg4 (verifier)"),
    (
        "lb_getpeername4",
        "program load: lb_getpeername4 (verifier)",
    ),
    ("lb_sock_egress", "program load: lb_sock_egress (verifier)"),
];

/// The subjects of [`PROGRAMS`], in order.
pub const SUBJECTS: [&str; 8] = {
    let mut subjects = [""; 8];
    let mut i = 0;
    while i < PROGRAMS.len() {
        subjects[i] = PROGRAMS[i].1;
        i += 1;
    }
    subjects
};

/// Each program's load time in ms, `(subject, ms)`, from the agent's
/// first `programs verified` line (none when it has not logged it).
pub fn figures(log: &str) -> Vec<(&'static str, f64)> {
    let Some(line) = log.lines().find(|line| line.contains("programs verified")) else {
        return Vec::new();
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    PROGRAMS
        .iter()
        .filter_map(|(program, subject)| {
            let us: f64 = words
                .iter()
                .find_map(|w| w.strip_prefix(program)?.strip_prefix("_us=")?.parse().ok())?;
            Some((*subject, us / 1e3))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_logged_program_makes_a_figure_in_ms() {
        let log = "\
2026-12-02T05:00:00.000001Z  INFO lb::agent::datapath: programs verified lb_xdp_ingress_us=250400 lb_tc_egress_us=21000 lb_sock_egress_us=300
2026-12-02T05:00:01.000001Z  INFO lb::agent: datapath attached frontends=0 backends=0
";
        assert_eq!(
            figures(log),
            [
                ("program load: lb_xdp_ingress (verifier)", 250.4),
                ("program load: lb_tc_egress (verifier)", 21.0),
                ("program load: lb_sock_egress (verifier)", 0.3),
            ]
        );
        assert!(figures("2026-12-02T05:00:00Z INFO lb::agent: datapath attached").is_empty());
    }
}
