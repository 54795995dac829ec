//! Attachment with pinned links: a restarted agent swaps its programs into
//! the links the previous one pinned (no gap), a link whose target went
//! away is replaced by a new attachment, and cleanup removes everything.
//! XDP and tcx are attached to `lo` of a network namespace private to the
//! test thread, never to this machine's interfaces.

mod common;

use aya::programs::links::{FdLink, PinnedLink};
use common::*;
use lb::datapath::{Attached, Datapath, LoadOptions, XdpAttachMode};

fn load(pin_dir: &std::path::Path) -> Datapath {
    Datapath::load(&LoadOptions {
        pin_dir: Some(pin_dir.to_path_buf()),
        max_tables: 8,
        ct_entries: 4096,
        ..LoadOptions::default()
    })
    .unwrap()
}

/// Held by every test here that loads an unpinned datapath: its private
/// map directory (`lb-unpinned-<pid>-<n>`) exists only while it loads, and
/// `unpinned_datapath_leaves_nothing_behind` must not see another test's.
static UNPINNED_LOADS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn unpinned_loads() -> std::sync::MutexGuard<'static, ()> {
    UNPINNED_LOADS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn prog_ids(dp: &Datapath) -> (u32, u32) {
    (
        dp.xdp_program().unwrap().info().unwrap().id(),
        dp.tc_egress_program().unwrap().info().unwrap().id(),
    )
}

#[test]
fn restart_swaps_programs_into_pinned_links_and_cleanup_detaches() {
    let mut t = TestDatapath::load();
    let pin_dir = t.pin_dir.clone();
    let xdp_pin = pin_dir.join("links/lb_xdp_ingress@lo");
    let tc_pin = pin_dir.join("links/lb_tc_egress@lo");

    in_private_netns(|| {
        let lo = 1u64; // lo is ifindex 1 in every namespace
        let old = prog_ids(t.dp());
        assert_eq!(
            t.dp_mut().attach_xdp("lo", XdpAttachMode::Generic).unwrap(),
            Attached::New
        );
        assert_eq!(t.dp_mut().attach_tc_egress("lo").unwrap(), Attached::New);
        assert_eq!(pinned_link_info(&xdp_pin), (old.0, lo));
        assert_eq!(pinned_link_info(&tc_pin), (old.1, lo));

        // The agent exits: the links stay, pinned.
        drop(t.dp.take());
        assert_eq!(pinned_link_info(&xdp_pin), (old.0, lo));

        // The next agent swaps its programs into the same links.
        let mut dp = load(&pin_dir);
        let new = prog_ids(&dp);
        assert_ne!(new, old);
        assert_eq!(dp.attach_xdp("lo", true).unwrap(), Attached::Replaced);
        assert_eq!(dp.attach_tc_egress("lo").unwrap(), Attached::Replaced);
        assert_eq!(pinned_link_info(&xdp_pin), (new.0, lo));
        assert_eq!(pinned_link_info(&tc_pin), (new.1, lo));
        // Attaching again is idempotent.
        assert_eq!(dp.attach_xdp("lo", true).unwrap(), Attached::Replaced);
        drop(dp);

        // Cleanup unpins: nothing holds the links any more, so they detach
        // (the kernel releases an unpinned link from a workqueue).
        Datapath::detach_all(&pin_dir).unwrap();
        assert!(!pin_dir.exists(), "pin directory removed");
        // One XDP attachment per device: a fresh one succeeds once the old
        // link is gone.
        let _unpinned = unpinned_loads();
        let mut fresh = Datapath::load(&LoadOptions {
            max_tables: 4,
            ct_entries: 1024,
            ..LoadOptions::default()
        })
        .unwrap();
        eventually("the unpinned XDP link to detach", || {
            fresh.attach_xdp("lo", XdpAttachMode::Generic).is_ok()
        });
        fresh.attach_tc_egress("lo").unwrap();
        eventually("the unpinned tcx link to detach", || {
            aya::programs::SchedClassifier::query_tcx(c"lo", aya::programs::TcAttachType::Egress)
                .is_ok_and(|(_, progs)| progs.len() == 1)
        });
    });
}

#[test]
fn a_defunct_pinned_link_is_replaced_by_a_new_attachment() {
    let mut t = TestDatapath::load();
    let xdp_pin = t.pin_dir.join("links/lb_xdp_ingress@lo");
    let tc_pin = t.pin_dir.join("links/lb_tc_egress@lo");
    in_private_netns(|| {
        t.dp_mut().attach_xdp("lo", XdpAttachMode::Generic).unwrap();
        t.dp_mut().attach_tc_egress("lo").unwrap();
    });
    // That namespace is gone with its thread: its lo, and with it the
    // links' target, go away (asynchronously).
    eventually("the XDP link to lose its device", || {
        pinned_link_info(&xdp_pin).1 == 0
    });
    eventually("the tcx link to lose its device", || {
        pinned_link_info(&tc_pin).1 == 0
    });

    in_private_netns(|| {
        assert_eq!(
            t.dp_mut().attach_xdp("lo", XdpAttachMode::Generic).unwrap(),
            Attached::New
        );
        assert_eq!(t.dp_mut().attach_tc_egress("lo").unwrap(), Attached::New);
        assert_eq!(pinned_link_info(&xdp_pin).1, 1);
        assert_eq!(pinned_link_info(&tc_pin).1, 1);
    });
}

#[test]
fn unpinned_datapath_leaves_nothing_behind() {
    ensure_bpffs();
    let _unpinned = unpinned_loads();
    let before: Vec<_> = std::fs::read_dir("/sys/fs/bpf")
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    in_private_netns(|| {
        let mut dp = Datapath::load(&LoadOptions {
            max_tables: 4,
            ct_entries: 1024,
            ..LoadOptions::default()
        })
        .unwrap();
        assert_eq!(dp.pin_dir(), None);
        assert_eq!(
            dp.attach_xdp("lo", XdpAttachMode::Generic).unwrap(),
            Attached::New
        );
        // The maps work without pins.
        let maps = dp.maps().unwrap();
        assert_eq!(lb::datapath::DatapathMaps::max_tables(&maps), 4);
        let after: Vec<_> = std::fs::read_dir("/sys/fs/bpf")
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            after
                .iter()
                .filter(|n| n.to_string_lossy().starts_with("lb-unpinned"))
                .count(),
            0,
            "no pins left: {after:?} (before: {before:?})"
        );
        // Dropping the datapath detaches its unpinned XDP link: attaching
        // again works.
        drop(maps);
        drop(dp);
        let mut dp = Datapath::load(&LoadOptions {
            max_tables: 4,
            ct_entries: 1024,
            ..LoadOptions::default()
        })
        .unwrap();
        assert_eq!(
            dp.attach_xdp("lo", XdpAttachMode::Generic).unwrap(),
            Attached::New
        );
    });
}

#[test]
fn pinned_links_are_aya_fd_links() {
    // The pins are ordinary bpf_link pins: aya (or bpftool) can open them.
    let mut t = TestDatapath::load();
    let pin = t.pin_dir.join("links/lb_xdp_ingress@lo");
    in_private_netns(|| {
        t.dp_mut().attach_xdp("lo", XdpAttachMode::Generic).unwrap();
        let link: FdLink = PinnedLink::from_pin(&pin).unwrap().into();
        let info = link.info().unwrap();
        assert_eq!(
            info.program_id(),
            t.dp().xdp_program().unwrap().info().unwrap().id()
        );
        assert_eq!(
            info.link_type().unwrap(),
            aya::programs::links::LinkType::Xdp
        );
    });
}

/// `--device auto` reads the routing table of the agent's own network
/// namespace: in a namespace whose default route leaves through `up0`, it
/// names `up0` and nothing else (not `lo`, not the other end's device).
#[test]
fn device_auto_finds_the_default_route_device() {
    in_private_netns(|| {
        let ip = |args: &[&str]| {
            let status = std::process::Command::new("ip")
                .args(args)
                .status()
                .unwrap();
            assert!(status.success(), "ip {args:?}");
        };
        ip(&["link", "set", "lo", "up"]);
        ip(&[
            "link", "add", "up0", "type", "veth", "peer", "name", "side0",
        ]);
        ip(&["link", "set", "up0", "up"]);
        ip(&["link", "set", "side0", "up"]);
        ip(&["addr", "add", "192.0.2.2/24", "dev", "up0"]);
        ip(&["addr", "add", "198.51.100.2/24", "dev", "side0"]);
        assert!(matches!(
            lb::agent::devices::detect(),
            Err(lb::agent::devices::DeviceError::NoDefaultRoute)
        ));
        ip(&["route", "add", "default", "via", "192.0.2.1", "dev", "up0"]);
        let given = ["auto".to_string(), "side0".to_string()];
        assert_eq!(
            lb::agent::devices::resolve(&given).unwrap(),
            ["up0", "side0"]
        );
    });
}
