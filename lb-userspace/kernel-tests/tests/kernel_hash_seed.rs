//! The flow hash's per-cluster seed (`--hash-seed`): the kernel selects
//! with exactly lb-common's seeded hash (so every node with the same seed
//! picks the same backend, and `lb trace` agrees), and another seed moves
//! flows to other backends (so outsiders who do not know it cannot aim
//! flows at one backend).

mod common;

use std::net::Ipv4Addr;

use common::*;
use lb_common::{
    PROTO_TCP, SCOPE_EXTERNAL,
    flow_hash::{flow_hash4_seeded, maglev_slot},
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const NODE_PORT: u16 = 30080;

/// The pod each of 64 new flows reaches under `seed`, checked against the
/// seeded hash.
fn choices(seed: u32) -> Vec<Ipv4Addr> {
    let mut t = TestDatapath::load();
    t.maps.set_hash_seed(seed).unwrap();
    assert_eq!(t.maps.hash_seed().unwrap(), seed);
    let pods: Vec<Ipv4Addr> = (0..4).map(|i| Ipv4Addr::new(10, 244, 2, 10 + i)).collect();
    let backends: Vec<(u32, lb_common::Backend4)> = pods
        .iter()
        .enumerate()
        .map(|(i, a)| (10 + i as u32, backend(*a, 8080, PROTO_TCP)))
        .collect();
    install_service(
        &mut t.maps,
        frontend_key(NODE, NODE_PORT, PROTO_TCP, SCOPE_EXTERNAL),
        3,
        5,
        0,
        &backends,
    );
    let table = round_robin(&[10, 11, 12, 13]);
    (41000..41064u16)
        .map(|sport| {
            let (_, out) = t.run_xdp(&tcp_frame(CLIENT, sport, NODE, NODE_PORT, true, b""));
            let dst = check_frame(&out).dst;
            let h = flow_hash4_seeded(
                seed,
                be32(CLIENT),
                be32(NODE),
                be16(sport),
                be16(NODE_PORT),
                PROTO_TCP,
            );
            let id = table[maglev_slot(h) as usize];
            assert_eq!(
                dst,
                pods[(id - 10) as usize],
                "seed {seed:#x} sport {sport}"
            );
            dst
        })
        .collect()
}

#[test]
fn the_kernel_selects_with_the_clusters_seed() {
    let unseeded = choices(0);
    let seeded = choices(0x5eed_1234);
    assert_eq!(
        choices(0x5eed_1234),
        seeded,
        "the same seed, the same choices"
    );
    let moved = unseeded.iter().zip(&seeded).filter(|(a, b)| a != b).count();
    assert!(moved > 16, "another seed moves flows: {moved} of 64");
}
