//! End-to-end: a flood of spoofed new flows through a NodePort does not
//! displace an idle established connection. The reported failure: 200,000
//! spoofed UDP flows evicted an idle TCP connection's reply entry from the
//! one shared LRU, and the pod's packets then left with the pod's address.
//! Now a flow enters the table of assured flows only once its handshake
//! completes (the kernel's IPS_ASSURED), and floods fill the other table.
//!
//! The flood: the bench's live-frames generator in the client's namespace,
//! UDP to the NodePort from 1,048,576 spoofed sources (random addresses and
//! ports), about three frames each, until the datapath counted at least a
//! million new flows: over 60 times the table of new flows the agent is
//! started with (`--ct-entries 65536`: 16,384 new-flow entries, two per
//! flow).

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use lb::datapath::KernelMaps;
use lb_bench::{
    live_frames::{FrameSpec, Generator},
    throughput_nodes::mac,
};
use lb_common::{PROTO_TCP, ct::CT_ESTABLISHED, reason::Reason};
use xtask::{
    demo::{Chat, FRONTENDS, Origin, exclusive_env_with},
    manifests,
    testbed::{CLIENT_ADDR, EXTERNAL_DEVICE, NODE_ADDR},
};

/// Spoofed flows: 32 source addresses times 32,768 source ports.
const SPOOFED_FLOWS: u64 = 32 * 32_768;
/// Frames sent: about three per spoofed flow, so most flows are seen more
/// than once (as in the report, where each was sent twice): an LRU
/// protects entries seen twice over entries seen once, so a flood of
/// single packets alone would prove little.
const FLOOD_FRAMES: u64 = 3 * SPOOFED_FLOWS;
/// New flows the datapath must have counted (entries created, again after
/// each eviction).
const FLOOD_FLOWS: u64 = 1_000_000;
const UDP_NODE_PORT: u16 = 30053;

#[test]
fn an_idle_connection_survives_a_flood_of_spoofed_new_flows() {
    let (_serial, mut env) = exclusive_env_with(
        |dir| manifests::write_demo(dir, &[0, 1, 2]),
        &["--ct-entries", "65536"],
    );
    let nodeport = FRONTENDS
        .iter()
        .find(|f| f.label.contains("web-nodeport:http"))
        .expect("the demo's NodePort");
    let mut idle = Chat::open(&mut env, Origin::Client, nodeport.addr);
    let pod = idle.ask();
    assert!(pod.starts_with("pod-"), "{pod}");

    let maps = KernelMaps::open_pinned(&env.bed.pin_dir).expect("the agent's pinned maps");
    assert!(
        maps.stat(Reason::CtPromoted).unwrap() >= 1,
        "the handshake assured the connection"
    );
    let generator = Generator::load(&FrameSpec {
        src_mac: mac(&env.bed.client_ns(), "eth0").unwrap(),
        dst_mac: mac(&env.bed.node_ns(), EXTERNAL_DEVICE).unwrap(),
        src_base: Ipv4Addr::new(10, 128, 0, 0),
        src_mask: 0x1f,
        sport_base: 0x8000,
        sport_mask: 0x7fff,
        dst_base: NODE_ADDR,
        dst_count: 1,
        dport: UDP_NODE_PORT,
    })
    .expect("loading the live-frames generator");
    let client_ns = env.bed.netns_path(&env.bed.client_ns());
    let new_flows = || maps.stat(Reason::DnatNew).unwrap();
    let before = new_flows();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut frames = 0;
    while frames < FLOOD_FRAMES || new_flows() - before < FLOOD_FLOWS {
        assert!(
            Instant::now() < deadline,
            "only {frames} frames and {} new flows in 120 s",
            new_flows() - before
        );
        frames += generator
            .run(&client_ns, "eth0", Duration::from_millis(500))
            .expect("flooding")
            .frames;
    }
    let flooded = new_flows() - before;
    let fill = maps.fill().unwrap();
    let table = |name| fill.iter().find(|f| f.map == name).unwrap().clone();
    let new_table = table("new_connections");
    eprintln!(
        "flood: {frames} frames, {flooded} new flows; new-flow table {} of {}, assured table {} of {}",
        new_table.entries,
        new_table.capacity,
        table("connections").entries,
        table("connections").capacity
    );
    assert!(
        flooded >= 4 * new_table.capacity,
        "the flood must wrap the new-flow table several times"
    );

    // The idle connection's entries are still there, both directions (the
    // agent's readiness probes were closed: not established).
    let client = u32::from_ne_bytes(CLIENT_ADDR.octets());
    let idle_entries = maps
        .connections()
        .unwrap()
        .into_iter()
        .filter(|(k, v)| {
            k.proto == PROTO_TCP
                && v.state == CT_ESTABLISHED
                && k.original_flow(v).is_some_and(|f| f.src.addr_be == client)
        })
        .count();
    assert_eq!(idle_entries, 2, "the idle connection's two entries");

    // The idle connection still works both ways, on its own pod.
    for _ in 0..3 {
        assert_eq!(idle.ask(), pod, "{}", env.agent_log_text());
    }
    // And new connections still work.
    let tally = env.request(nodeport, 10).unwrap();
    assert!(tally.errors.is_empty(), "{:?}", tally.errors);
}
