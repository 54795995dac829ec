//! The test-run harness benchmarks use: `repeat` runs with the kernel's
//! own timing, and running the program an agent attached, found through
//! its pinned link or its id, over the live maps. Attachments go to `lo`
//! of a network namespace private to the test thread.

mod common;

use std::{net::Ipv4Addr, time::Duration};

use common::*;
use lb::datapath::{LiveProgram, XdpAttachMode};
use lb_common::reason::Reason;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// A frame for no service: XDP_PASS, untouched, one `pass_no_service`
/// count per run.
fn no_service_frame() -> Vec<u8> {
    tcp_frame(CLIENT, 40000, NODE, 22, true, b"")
}

#[test]
fn repeated_runs_report_the_kernels_mean_duration() {
    let t = TestDatapath::load();
    let frame = no_service_frame();
    let outcome = t.dp().test_run_xdp(&frame, 1000).unwrap();
    assert_eq!(outcome.return_value, XDP_PASS);
    assert_eq!(outcome.packet_out, frame);
    assert!(
        outcome.duration > Duration::ZERO && outcome.duration < Duration::from_millis(1),
        "mean duration of one run: {:?}",
        outcome.duration
    );
    // The program really ran 1000 times.
    assert_eq!(t.nonzero_stats(), vec![(Reason::PassNoService, 1000)]);

    let single = t.dp().test_run_tc_egress(&frame, 1).unwrap();
    assert_eq!(single.tc_verdict(), TCX_NEXT);
}

#[test]
fn the_attached_program_runs_by_its_pinned_link_and_by_its_id() {
    let mut t = TestDatapath::load();
    let xdp_pin = t.pin_dir.join("links/lb_xdp_ingress@lo");
    let tc_pin = t.pin_dir.join("links/lb_tc_egress@lo");
    let frame = no_service_frame();
    in_private_netns(|| {
        t.dp_mut().attach_xdp("lo", XdpAttachMode::Generic).unwrap();
        t.dp_mut().attach_tc_egress("lo").unwrap();

        let live = LiveProgram::from_pinned_link(&xdp_pin).unwrap();
        let id = t.dp().xdp_program().unwrap().info().unwrap().id();
        assert!(matches!(live, LiveProgram::Xdp(_)), "{live:?}");
        assert_eq!(live.id().unwrap(), id);
        let outcome = live.test_run(&frame, 10).unwrap();
        assert_eq!(
            (outcome.return_value, &outcome.packet_out),
            (XDP_PASS, &frame)
        );
        assert!(outcome.duration > Duration::ZERO);
        // The same maps the agent's datapath reads.
        assert_eq!(t.stat(Reason::PassNoService), 10);

        let by_id = LiveProgram::from_id(id).unwrap();
        assert_eq!(by_id.test_run(&frame, 1).unwrap().return_value, XDP_PASS);
        assert_eq!(t.stat(Reason::PassNoService), 11);

        let tc = LiveProgram::from_pinned_link(&tc_pin).unwrap();
        assert!(matches!(tc, LiveProgram::Tc(_)), "{tc:?}");
        assert_eq!(tc.test_run(&frame, 1).unwrap().tc_verdict(), TCX_NEXT);
    });

    let missing = t.pin_dir.join("links/lb_xdp_ingress@eth9");
    let err = format!("{:#}", LiveProgram::from_pinned_link(&missing).unwrap_err());
    assert!(err.contains("no link pinned at"), "{err}");
    let err = format!("{:#}", LiveProgram::from_id(u32::MAX).unwrap_err());
    assert!(err.contains(&format!("{}", u32::MAX)), "{err}");
}
