//! Maglev spread and disruption at the table sizes per backend count
//! (`lb_common::maglev::table_size`), against the fixed 1,021 slots every
//! table had before. Figures print with `--nocapture`:
//! `cargo test -p lb-userspace --lib maglev_sizes -- --nocapture`.

use std::net::Ipv4Addr;

use lb_common::{MAGLEV_TABLE_SIZE, maglev::table_size};

use super::maglev::table;
use crate::model::{Backend, Protocol};

fn backends(n: u32, seed: u32) -> Vec<Backend> {
    (0..n)
        .map(|i| Backend {
            addr: Ipv4Addr::from(0x0a00_0000 + seed.wrapping_mul(7919) + i * 13).into(),
            port: 8080,
            protocol: Protocol::Tcp,
        })
        .collect()
}

/// The largest relative distance of a backend's share from the ideal.
fn spread_error(n: u32, size: u32) -> f64 {
    let mut counts = vec![0u32; n as usize];
    for index in table(&backends(n, 1), size) {
        counts[index as usize] += 1;
    }
    let ideal = f64::from(size) / f64::from(n);
    counts
        .iter()
        .map(|&c| (f64::from(c) - ideal).abs() / ideal)
        .fold(0.0, f64::max)
}

/// Mean over a few sets of the slots that moved when one backend left,
/// beyond the departed backend's own (Maglev's disruption), as a fraction.
fn removal_disruption(n: u32, size: u32) -> f64 {
    let sets = 5;
    let mut sum = 0.0;
    for seed in 0..sets {
        let set = backends(n, seed);
        let gone = set[(seed as usize * 31) % set.len()];
        let rest: Vec<Backend> = set.iter().copied().filter(|b| *b != gone).collect();
        let before: Vec<Backend> = table(&set, size).iter().map(|&i| set[i as usize]).collect();
        let after: Vec<Backend> = table(&rest, size)
            .iter()
            .map(|&i| rest[i as usize])
            .collect();
        let extra = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b != gone && b != a)
            .count();
        sum += extra as f64 / f64::from(size);
    }
    sum / f64::from(sets)
}

/// The sizes keep every share within 1% of the ideal up to 655 backends
/// (100 slots each or more), where 1,021 fixed slots were off by 10% at
/// 100 backends and by 100% past 510; past 655 the largest table holds
/// the error under N/65,537 (0.8% at 1,000). Removing one backend moves
/// few other slots (Maglev's disruption), within the bound the fixed
/// tables were held to.
#[test]
fn sized_tables_keep_the_spread_within_one_percent_up_to_655_backends() {
    let mut figures = Vec::new();
    for n in [10u32, 100, 300, 655, 1000] {
        let size = table_size(n);
        let (sized, fixed) = (spread_error(n, size), spread_error(n, MAGLEV_TABLE_SIZE));
        let disruption = removal_disruption(n, size);
        eprintln!(
            "{n} backends: {size} slots, spread error {:.2}% (1,021 slots: {:.2}%), one removal moves {:.2}% other slots",
            sized * 100.0,
            fixed * 100.0,
            disruption * 100.0
        );
        figures.push((n, size, sized, fixed, disruption));
    }
    for &(n, size, sized, _, disruption) in &figures {
        let bound = (f64::from(n) / f64::from(size)).max(0.01);
        assert!(sized < bound, "{n} backends in {size}: spread {sized:.4}");
        // The bound the fixed tables were held to (1/N + 5% moved in all,
        // `removal_from_simple_sets_is_within_one_over_n_plus_5_percent`).
        assert!(
            disruption < 0.05,
            "{n} backends in {size}: disruption {disruption:.4}"
        );
    }
    let fixed_at_100 = figures[1].3;
    assert!(
        fixed_at_100 > 0.07,
        "1,021 slots at 100 backends: {fixed_at_100:.4}"
    );
}
