//! The reject rate limit through the real program: a burst of packets to a
//! Service without endpoints draws at most the kernel's own ICMP error
//! budget (icmp_msgs_burst 50, then icmp_msgs_per_sec 1,000 per second)
//! from each CPU; the rest is dropped and counted apart.

mod common;

use std::{net::Ipv4Addr, time::Instant};

use common::*;
use lb_common::{
    PROTO_UDP, SCOPE_EXTERNAL,
    reason::Reason,
    reject::{REJECT_BURST, REJECT_RATE_PER_S},
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// Keeps this thread on one CPU, so one per-CPU bucket serves the burst.
fn pin_to_one_cpu() {
    // SAFETY: a zeroed cpu_set_t is valid; plain syscalls on this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        let cpu = (0..libc::CPU_SETSIZE as usize)
            .find(|&c| libc::CPU_ISSET(c, &set))
            .expect("some CPU is allowed");
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

#[test]
fn the_reject_rate_limit_holds_under_a_burst() {
    pin_to_one_cpu();
    let mut t = TestDatapath::load();
    install_service(
        &mut t.maps,
        frontend_key(NODE, 30001, PROTO_UDP, SCOPE_EXTERNAL),
        1,
        0,
        0,
        &[],
    );
    let burst = 2_000u64;
    let started = Instant::now();
    let mut sent = 0u64;
    for i in 0..burst {
        let frame = udp_frame(CLIENT, 10_000 + i as u16, NODE, 30001, b"spoofed", true);
        let (action, out) = t.run_xdp(&frame);
        match action {
            XDP_TX => {
                sent += 1;
                assert_eq!(out.len(), 70, "an ICMP port unreachable");
            }
            XDP_DROP => {}
            other => panic!("action {other}"),
        }
    }
    let elapsed_ms = started.elapsed().as_millis() as u64 + 1;
    // What the budget allows over the time the burst took.
    let allowed = REJECT_BURST + elapsed_ms * REJECT_RATE_PER_S / 1000;
    assert!(sent >= REJECT_BURST, "a full burst first: {sent}");
    assert!(
        sent <= allowed,
        "{sent} rejects in {elapsed_ms} ms, at most {allowed}"
    );
    assert!(
        sent < burst,
        "the test must outrun the rate: {sent} of {burst}"
    );
    assert_eq!(t.stat(Reason::RejectNoEndpoints), sent);
    assert_eq!(t.stat(Reason::DropRejectRateLimited), burst - sent);
}
