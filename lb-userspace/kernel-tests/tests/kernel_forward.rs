//! Forwarding in XDP (`--xdp-forward`) through the real XDP program, in a
//! network namespace of the test's own with real devices, routes and
//! neighbours, so the program's FIB lookup sees what the kernel's
//! forwarding would: the frame leaves from XDP (`XDP_TX` back out of the
//! device it came by, a redirect to another forwarding device) with its
//! MACs set and its TTL decremented as a router's, or goes to the stack,
//! each outcome counted.

mod common;

use std::{collections::BTreeSet, net::Ipv4Addr, process::Command};

use common::*;
use lb_common::{
    FE_KIND_NODE_PORT, FE_KIND_SHIFT, PROTO_UDP, SCOPE_EXTERNAL, forward::ForwardOutcome,
    reason::Reason,
};

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// The node's address on its external device `ext0`.
const NODE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The MAC of the next hop (10.77.0.2, on `ext0`'s link) toward the other
/// node's pods.
const ROUTER_MAC: &str = "02:00:00:00:77:02";
/// A pod on another node, routed via `ROUTER` (out of `ext0` again).
const REMOTE_POD: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 5);
/// A pod on another node behind the second forwarding device `ext1`.
const OTHER_LINK_POD: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 9);
const OTHER_LINK_MAC: &str = "02:00:00:00:78:09";
/// A pod behind a device lb's XDP does not run on (`pods0`).
const LOCAL_POD: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 4);
/// A pod routed via a next hop with no neighbour entry.
const UNRESOLVED_POD: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 5);

const NODE_PORT: u32 = FE_KIND_NODE_PORT << FE_KIND_SHIFT;

fn sh(args: &[&str]) {
    let status = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(status.success(), "{args:?}: {status}");
}

fn ifindex(device: &str) -> u32 {
    let name = cstr(device);
    // SAFETY: a NUL-terminated name that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(index, 0, "no device {device}");
    index
}

fn mac(text: &str) -> [u8; 6] {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

/// The MAC each device of the node gets (`/sys` shows another namespace's
/// devices, so the test sets them rather than reads them).
fn device_mac(device: &str) -> [u8; 6] {
    match device {
        "ext0" => mac("02:00:00:00:77:01"),
        "ext1" => mac("02:00:00:00:78:01"),
        "pods0" => mac("02:00:00:00:66:01"),
        other => panic!("no device {other} in the test's node"),
    }
}

/// The node of these tests, built in the calling thread's (private)
/// namespace: `ext0` and `ext1` external (veth pairs, their peers here
/// too), `pods0` its pods' device (a veth too: this kernel has no dummy
/// devices), routes to four pods, and forwarding on.
fn build_node() {
    for (dev, peer, addr) in [
        ("ext0", "ext0p", "10.77.0.1/24"),
        ("ext1", "ext1p", "10.78.0.1/24"),
        ("pods0", "pods0p", "10.66.0.1/24"),
    ] {
        sh(&[
            "ip", "link", "add", dev, "type", "veth", "peer", "name", peer,
        ]);
        sh(&["ip", "addr", "add", addr, "dev", dev]);
        let address = device_mac(dev).map(|b| format!("{b:02x}")).join(":");
        sh(&["ip", "link", "set", dev, "address", &address]);
        sh(&["ip", "link", "set", dev, "up"]);
        sh(&["ip", "link", "set", peer, "up"]);
    }
    let neighbour = |addr: &str, mac: &str, dev: &str| {
        sh(&[
            "ip",
            "neigh",
            "replace",
            addr,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])
    };
    neighbour("10.77.0.2", ROUTER_MAC, "ext0");
    neighbour("10.78.0.9", OTHER_LINK_MAC, "ext1");
    neighbour("10.66.0.4", "02:00:00:00:66:04", "pods0");
    sh(&["ip", "route", "add", "10.88.0.0/24", "via", "10.77.0.2"]);
    sh(&["ip", "route", "add", "10.99.0.0/24", "via", "10.77.0.3"]);
    sh(&["sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"]);
}

/// A NodePort on `NODE` per pod, UDP, one backend each.
fn serve(t: &mut TestDatapath) -> [(u16, Ipv4Addr); 4] {
    let services = [
        (30001, REMOTE_POD),
        (30002, OTHER_LINK_POD),
        (30003, LOCAL_POD),
        (30004, UNRESOLVED_POD),
    ];
    for (i, (port, pod)) in services.iter().enumerate() {
        let id = i as u32 + 1;
        install_service(
            &mut t.maps,
            frontend_key(NODE, *port, PROTO_UDP, SCOPE_EXTERNAL),
            id,
            id - 1,
            NODE_PORT,
            &[(id, backend(*pod, 8080, PROTO_UDP))],
        );
    }
    services
}

fn forward_count(t: &TestDatapath, outcome: ForwardOutcome) -> u64 {
    let stats = t.maps.forward_stats().unwrap();
    stats.iter().find(|(o, _)| *o == outcome).unwrap().1
}

fn datagram(port: u16, sport: u16) -> Vec<u8> {
    udp_frame(CLIENT, sport, NODE, port, b"forward me", true)
}

fn ttl(frame: &[u8]) -> u8 {
    frame[14 + 8]
}

#[test]
fn a_remote_backend_on_the_ingress_link_is_sent_back_out_by_xdp_tx() {
    in_private_netns(|| {
        build_node();
        let mut t = TestDatapath::load();
        serve(&mut t);
        let on: BTreeSet<u32> = [ifindex("ext0"), ifindex("ext1")].into();
        t.maps.set_forward_devices(&on).unwrap();
        assert_eq!(t.maps.forward_devices().unwrap(), on);

        // New flow, then an established packet of it: both leave by XDP.
        for (packet, reason) in [(1, Reason::DnatNew), (2, Reason::DnatEstablished)] {
            let (action, out) = t
                .dp()
                .run_xdp_from(&datagram(30001, 40000), ifindex("ext0"))
                .unwrap();
            assert_eq!(action, XDP_TX, "packet {packet}");
            let seen = check_frame(&out);
            assert_eq!((seen.dst, seen.dport), (REMOTE_POD, 8080));
            assert_eq!(&out[0..6], &mac(ROUTER_MAC), "to the next hop's MAC");
            assert_eq!(&out[6..12], &device_mac("ext0"), "from the device's own");
            assert_eq!(ttl(&out), 63, "a router's decrement");
            assert_eq!(t.stat(reason), 1);
        }
        assert_eq!(forward_count(&t, ForwardOutcome::Transmitted), 2);
    });
}

#[test]
fn a_route_by_another_forwarding_device_is_a_redirect_and_any_other_device_takes_the_stack() {
    in_private_netns(|| {
        build_node();
        let mut t = TestDatapath::load();
        serve(&mut t);
        t.maps
            .set_forward_devices(&[ifindex("ext0"), ifindex("ext1")].into())
            .unwrap();
        let ext0 = ifindex("ext0");

        let (action, out) = t.dp().run_xdp_from(&datagram(30002, 40001), ext0).unwrap();
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(check_frame(&out).dst, OTHER_LINK_POD);
        assert_eq!(&out[0..6], &mac(OTHER_LINK_MAC));
        assert_eq!(&out[6..12], &device_mac("ext1"));
        assert_eq!(ttl(&out), 63);
        assert_eq!(forward_count(&t, ForwardOutcome::Redirected), 1);

        // pods0 runs no lb XDP: translated, left to the stack untouched
        // otherwise (its TTL is the stack's to decrement).
        let (action, out) = t.dp().run_xdp_from(&datagram(30003, 40002), ext0).unwrap();
        assert_eq!(action, XDP_PASS);
        assert_eq!(check_frame(&out).dst, LOCAL_POD);
        assert_eq!(ttl(&out), 64);
        assert_eq!(&out[0..6], &NODE_MAC);
        assert_eq!(forward_count(&t, ForwardOutcome::StackOtherDevice), 1);

        // No neighbour entry for the next hop yet: the stack resolves it.
        let (action, out) = t.dp().run_xdp_from(&datagram(30004, 40003), ext0).unwrap();
        assert_eq!(action, XDP_PASS);
        assert_eq!(check_frame(&out).dst, UNRESOLVED_POD);
        assert_eq!(forward_count(&t, ForwardOutcome::StackNoNeighbour), 1);
        assert_eq!(t.stat(Reason::DnatNew), 3);
    });
}

#[test]
fn without_the_flag_or_on_another_device_every_packet_takes_the_stack_uncounted() {
    in_private_netns(|| {
        build_node();
        let mut t = TestDatapath::load();
        serve(&mut t);
        let (action, out) = t
            .dp()
            .run_xdp_from(&datagram(30001, 40004), ifindex("ext0"))
            .unwrap();
        assert_eq!(action, XDP_PASS, "no forwarding device at all");
        assert_eq!(check_frame(&out).dst, REMOTE_POD);
        assert_eq!(ttl(&out), 64);

        // On for ext1 only: a packet that came in by ext0 is not forwarded.
        t.maps
            .set_forward_devices(&[ifindex("ext1")].into())
            .unwrap();
        let (action, _) = t
            .dp()
            .run_xdp_from(&datagram(30001, 40005), ifindex("ext0"))
            .unwrap();
        assert_eq!(action, XDP_PASS);
        // A device the array cannot name is refused, and changes nothing.
        let past = lb_common::forward::MAX_FORWARD_IFINDEX;
        assert!(t.maps.set_forward_devices(&[past].into()).is_err());
        assert_eq!(t.maps.forward_devices().unwrap(), [ifindex("ext1")].into());
        // And off again: the set is replaced, not merged.
        t.maps.set_forward_devices(&BTreeSet::new()).unwrap();
        assert_eq!(t.maps.forward_devices().unwrap(), BTreeSet::new());
        let (action, _) = t
            .dp()
            .run_xdp_from(&datagram(30002, 40006), ifindex("ext1"))
            .unwrap();
        assert_eq!(action, XDP_PASS);
        let counted: u64 = t.maps.forward_stats().unwrap().iter().map(|(_, n)| n).sum();
        assert_eq!(counted, 0);
        assert_eq!(t.stat(Reason::DnatNew), 3);
    });
}

#[test]
fn an_expiring_ttl_and_a_packet_over_the_route_mtu_take_the_stack() {
    in_private_netns(|| {
        build_node();
        let mut t = TestDatapath::load();
        serve(&mut t);
        t.maps
            .set_forward_devices(&[ifindex("ext0")].into())
            .unwrap();
        let ext0 = ifindex("ext0");

        // TTL 1: the stack answers "time exceeded" (a router never sends a
        // packet on with TTL 0).
        let mut frame = datagram(30001, 40007);
        frame[14 + 8] = 1;
        let ip_checksum = etherparse::Ipv4HeaderSlice::from_slice(&frame[14..])
            .unwrap()
            .to_header()
            .calc_header_checksum();
        frame[14 + 10..14 + 12].copy_from_slice(&ip_checksum.to_be_bytes());
        let (action, out) = t.dp().run_xdp_from(&frame, ext0).unwrap();
        assert_eq!(action, XDP_PASS);
        assert_eq!(ttl(&out), 1);
        assert_eq!(forward_count(&t, ForwardOutcome::StackTtl), 1);

        // Over the MTU of the route: the stack fragments or answers.
        sh(&["ip", "link", "set", "ext0", "mtu", "1000"]);
        let big = udp_frame(CLIENT, 40008, NODE, 30001, &[7u8; 1200], true);
        let (action, out) = t.dp().run_xdp_from(&big, ext0).unwrap();
        assert_eq!(action, XDP_PASS);
        assert_eq!(check_frame(&out).dst, REMOTE_POD);
        assert_eq!(forward_count(&t, ForwardOutcome::StackFragNeeded), 1);
    });
}

/// The devices the agent's `xdp_targets` would name now, read from the
/// kernel as it reads them (`xdp_features`).
fn agent_targets(forwarding: &BTreeSet<u32>) -> BTreeSet<u32> {
    let devices = lb::agent::xdp_features::Netdev::open()
        .expect("the netdev netlink family (Linux 6.3+)")
        .devices()
        .unwrap();
    lb::agent::xdp_targets::targets(&devices, forwarding)
}

#[test]
fn a_pod_veth_whose_pod_end_runs_napi_is_redirected_to_and_one_without_takes_the_stack() {
    in_private_netns(|| {
        build_node();
        let mut t = TestDatapath::load();
        serve(&mut t);
        let ext0 = ifindex("ext0");
        let forwarding: BTreeSet<u32> = [ext0].into();
        t.maps.set_forward_devices(&forwarding).unwrap();

        // The veth's other end runs no NAPI: a frame redirected to it would
        // be dropped, so the kernel does not list it and the stack forwards.
        let targets = agent_targets(&forwarding);
        assert!(!targets.contains(&ifindex("pods0")), "{targets:?}");
        t.maps.set_xdp_targets(&targets).unwrap();
        let (action, out) = t.dp().run_xdp_from(&datagram(30003, 40101), ext0).unwrap();
        assert_eq!(action, XDP_PASS);
        assert_eq!((ttl(&out), &out[0..6]), (64, &NODE_MAC[..]));
        assert_eq!(forward_count(&t, ForwardOutcome::StackOtherDevice), 1);

        // GRO on at the pod's end (as a routed CNI wanting XDP sets it):
        // the kernel now says the veth takes redirected frames, and the
        // next frame leaves from XDP with the pod's and the veth's MACs.
        sh(&["ethtool", "-K", "pods0p", "gro", "on"]);
        let targets = agent_targets(&forwarding);
        assert_eq!(
            targets,
            [ifindex("pods0")].into(),
            "ext0 is a forwarding device already"
        );
        t.maps.set_xdp_targets(&targets).unwrap();
        assert_eq!(t.maps.xdp_targets().unwrap(), targets);
        let (action, out) = t.dp().run_xdp_from(&datagram(30003, 40102), ext0).unwrap();
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(check_frame(&out).dst, LOCAL_POD);
        assert_eq!(&out[0..6], &mac("02:00:00:00:66:04"));
        assert_eq!(&out[6..12], &device_mac("pods0"));
        assert_eq!(ttl(&out), 63);
        assert_eq!(forward_count(&t, ForwardOutcome::Redirected), 1);

        // GRO off again: it leaves the targets, and frames the stack.
        sh(&["ethtool", "-K", "pods0p", "gro", "off"]);
        let targets = agent_targets(&forwarding);
        assert!(targets.is_empty(), "{targets:?}");
        t.maps.set_xdp_targets(&targets).unwrap();
        let (action, _) = t.dp().run_xdp_from(&datagram(30003, 40103), ext0).unwrap();
        assert_eq!(action, XDP_PASS);
        assert_eq!(forward_count(&t, ForwardOutcome::StackOtherDevice), 2);
        assert_eq!(t.stat(Reason::DnatNew), 3);
    });
}

#[test]
fn the_redirect_targets_refuse_more_devices_than_they_hold_and_keep_what_they_had() {
    in_private_netns(|| {
        let mut t = TestDatapath::load();
        t.maps.set_xdp_targets(&[5, 6].into()).unwrap();
        let too_many: BTreeSet<u32> = (1..=lb_common::forward::MAX_XDP_TARGETS + 1).collect();
        assert!(t.maps.set_xdp_targets(&too_many).is_err());
        assert_eq!(t.maps.xdp_targets().unwrap(), [5, 6].into());
        t.maps.set_xdp_targets(&[6, 7].into()).unwrap();
        assert_eq!(t.maps.xdp_targets().unwrap(), [6, 7].into());
    });
}
