//! What the agent reads back from the real maps: Maglev tables in one
//! batch lookup (the periodic resync reads every live table), and the fill
//! levels the metrics export.

mod common;

use common::*;
use lb::datapath::{
    DatapathMaps,
    loader::{Datapath, LoadOptions},
};
use lb_common::{MAGLEV_TABLE_SIZE, PROTO_TCP, SCOPE_EXTERNAL, maglev::MAX_TABLE_SIZE};

/// A table reads back as written, the first, a middle one and the last
/// id of the map, at the smallest and the largest size (each its own inner
/// map, read in one batch), and a table past the end is refused, as is a
/// size that is not a table size.
#[test]
fn maglev_tables_read_back_in_one_batch_as_written() {
    let mut t = TestDatapath::load_with(4, 4096);
    for (table, size) in [(0, MAGLEV_TABLE_SIZE), (1, MAX_TABLE_SIZE), (3, 1103)] {
        let slots: Vec<u32> = (0..size).map(|i| i * 7 + table).collect();
        t.maps.write_table(table, &slots).unwrap();
        assert_eq!(t.maps.read_table(table).unwrap(), slots, "table {table}");
    }
    assert_eq!(
        t.maps.read_table(2).unwrap(),
        Vec::<u32>::new(),
        "an unwritten table reads empty"
    );
    assert!(t.maps.read_table(4).is_err());
    assert!(
        t.maps.write_table(2, &[1; 1024]).is_err(),
        "1024 is no prime"
    );
}

/// `lb_map_entries{map}`: what `fill` counts is what the maps hold.
#[test]
fn the_fill_counts_what_the_maps_hold() {
    let mut t = TestDatapath::load_with(4, 4096);
    let backends = [
        (1, backend("10.244.1.1".parse().unwrap(), 8080, PROTO_TCP)),
        (2, backend("10.244.1.2".parse().unwrap(), 8080, PROTO_TCP)),
    ];
    let key = frontend_key("192.0.2.10".parse().unwrap(), 80, PROTO_TCP, SCOPE_EXTERNAL);
    install_service(&mut t.maps, key, 1, 2, 0, &backends);
    t.maps
        .set_cluster_ip("10.96.0.10".parse().unwrap())
        .unwrap();
    let fill: Vec<(&str, u64, u64)> = t
        .maps
        .fill()
        .unwrap()
        .into_iter()
        .map(|f| (f.map, f.entries, f.capacity))
        .collect();
    assert_eq!(
        fill,
        vec![
            ("frontends", 1, u64::from(lb_common::MAX_FRONTENDS)),
            ("backends", 2, u64::from(lb_common::DEFAULT_MAX_BACKENDS)),
            ("maglev_tables", 1, 4),
            ("services", 0, u64::from(lb_common::MAX_SERVICES)),
            ("connections", 0, 4096),
            ("new_connections", 0, 1024),
            (
                "socket_translations",
                0,
                u64::from(lb_common::DEFAULT_SOCK_REVNAT_ENTRIES)
            ),
            (
                "affinity",
                0,
                u64::from(lb_common::DEFAULT_AFFINITY_ENTRIES)
            ),
            ("source_ranges", 0, u64::from(lb_common::MAX_SOURCE_RANGES)),
            (
                "cluster_ips",
                1,
                u64::from(lb_common::service_cidr::MAX_CLUSTER_IPS)
            ),
            (
                "service_cidrs",
                0,
                u64::from(lb_common::service_cidr::MAX_SERVICE_CIDRS)
            ),
            (
                "fragments",
                0,
                u64::from(lb_common::frag::DEFAULT_FRAG_ENTRIES)
            ),
        ]
    );
}

/// Every table whose size is a flag (`--max-tables`, `--ct-entries`,
/// `--frag-entries`, `--sock-revnat-entries`, `--affinity-entries`,
/// `--max-backends`) is allocated at that size, and the fill levels
/// (`lb status`, `lb_map_capacity`) report it; a restart asking another
/// size for a pinned table is refused with the flag that keeps it.
#[test]
fn every_sized_table_takes_its_flag_s_size() {
    ensure_bpffs();
    let pin_dir = std::path::Path::new("/sys/fs/bpf").join(unique_name());
    let opts = LoadOptions {
        max_tables: 4,
        ct_entries: 4096,
        frag_entries: 64,
        sock_revnat_entries: 128,
        affinity_entries: 256,
        max_backends: Some(512),
        ..LoadOptions::default()
    };
    let t = TestDatapath::load_at_with(pin_dir, opts.clone()).unwrap();
    let fill = t.maps.fill().unwrap();
    let capacity = |map: &str| fill.iter().find(|f| f.map == map).map(|f| f.capacity);
    for (map, size) in [
        ("maglev_tables", 4),
        ("connections", 4096),
        ("new_connections", 1024),
        ("fragments", 64),
        ("socket_translations", 128),
        ("affinity", 256),
        ("backends", 512),
    ] {
        assert_eq!(capacity(map), Some(size), "{map}");
    }
    for (flag, resized) in [
        (
            "--sock-revnat-entries 128",
            LoadOptions {
                sock_revnat_entries: 256,
                ..opts.clone()
            },
        ),
        (
            "--affinity-entries 256",
            LoadOptions {
                affinity_entries: 512,
                ..opts.clone()
            },
        ),
    ] {
        let Err(err) = Datapath::load(&LoadOptions {
            pin_dir: Some(t.pin_dir.clone()),
            ..resized
        }) else {
            panic!("another size for a pinned table ({flag}) was accepted");
        };
        let err = format!("{err:#}");
        assert!(err.contains(flag), "{err}");
        assert!(err.contains("lb cleanup"), "{err}");
    }
}
