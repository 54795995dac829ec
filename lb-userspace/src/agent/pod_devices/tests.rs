use std::sync::{Arc, Mutex};

use super::*;

/// Devices by name with their ifindex, the route table, what was attached
/// and detached, the flag, and devices whose attach fails.
#[derive(Default)]
struct World {
    devices: BTreeMap<String, u32>,
    routes: String,
    attached: Vec<String>,
    detached: Vec<String>,
    masquerade: Option<bool>,
    broken: BTreeSet<String>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<World>>);

impl Fake {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }
}

impl PodHooks for Fake {
    fn attach(&mut self, device: &str) -> Result<()> {
        let mut world = self.world();
        if world.broken.contains(device) || !world.devices.contains_key(device) {
            anyhow::bail!("no device {device}");
        }
        world.attached.push(device.to_string());
        Ok(())
    }

    fn detach(&mut self, device: &str) -> Result<()> {
        self.world().detached.push(device.to_string());
        Ok(())
    }

    fn ifindex(&self, device: &str) -> Option<u32> {
        self.world().devices.get(device).copied()
    }

    fn routes(&self) -> Result<RouteTable> {
        Ok(RouteTable::parse(&self.world().routes))
    }

    fn masquerade_local_backends(&mut self, on: bool) -> Result<()> {
        self.world().masquerade = Some(on);
        Ok(())
    }
}

const HEADER: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask";

/// Routes: `(device, prefix, prefix length, via a gateway)`.
fn routes(rows: &[(&str, [u8; 4], u32, bool)]) -> String {
    let mut text = HEADER.to_string();
    for (device, prefix, len, gateway) in rows {
        let mask = if *len == 0 { 0 } else { u32::MAX << (32 - len) };
        let hex = |a: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(a));
        let flags = if *gateway { 3 } else { 1 };
        text.push_str(&format!(
            "\n{device}\t{}\t00000000\t{flags:04X}\t0\t0\t0\t{}",
            hex(*prefix),
            hex(mask.to_be_bytes())
        ));
    }
    text
}

fn addrs(list: &[[u8; 4]]) -> BTreeSet<Ipv4Addr> {
    list.iter().map(|a| Ipv4Addr::from(*a)).collect()
}

/// A kindnet-like node: eth0 external, one veth per pod with a /32, the
/// other node's pods via a gateway.
fn kind_node() -> (Fake, PodDevices) {
    let fake = Fake::default();
    {
        let mut world = fake.world();
        world.devices = [("eth0", 2), ("veth-a", 10), ("veth-b", 11)]
            .map(|(d, i)| (d.to_string(), i))
            .into();
        world.routes = routes(&[
            ("eth0", [0, 0, 0, 0], 0, true),
            ("eth0", [172, 18, 0, 0], 16, false),
            ("veth-a", [10, 244, 1, 2], 32, false),
            ("veth-b", [10, 244, 1, 3], 32, false),
            ("eth0", [10, 244, 2, 0], 24, true),
        ]);
    }
    let devices = PodDevices::new(
        Box::new(fake.clone()),
        ["eth0".to_string()].into(),
        BTreeSet::new(),
        BTreeSet::new(),
    );
    (fake, devices)
}

#[test]
fn each_local_endpoint_s_veth_is_hooked_once_and_local_backends_are_masqueraded() {
    let (fake, mut devices) = kind_node();
    let endpoints = addrs(&[[10, 244, 1, 2], [10, 244, 1, 3], [10, 244, 2, 9]]);
    devices.sync(&endpoints).unwrap();
    devices.sync(&endpoints).unwrap();
    let world = fake.world();
    assert_eq!(world.attached, ["veth-a", "veth-b"], "once each");
    assert_eq!(world.masquerade, Some(true));
    assert!(world.detached.is_empty());
}

#[test]
fn a_pod_that_leaves_takes_its_hook_and_a_recreated_veth_is_hooked_again() {
    let (fake, mut devices) = kind_node();
    devices
        .sync(&addrs(&[[10, 244, 1, 2], [10, 244, 1, 3]]))
        .unwrap();
    devices.sync(&addrs(&[[10, 244, 1, 2]])).unwrap();
    assert_eq!(fake.world().detached, ["veth-b"]);
    // veth-a deleted and created again (a new pod, the same name).
    fake.world().devices.insert("veth-a".into(), 12);
    devices.sync(&addrs(&[[10, 244, 1, 2]])).unwrap();
    assert_eq!(fake.world().attached, ["veth-a", "veth-b", "veth-a"]);
}

#[test]
fn an_unrouted_endpoint_or_a_failed_hook_stops_masquerading_local_backends() {
    let (fake, mut devices) = kind_node();
    devices.sync(&addrs(&[[10, 244, 1, 2]])).unwrap();
    assert_eq!(fake.world().masquerade, Some(true));
    // No route at all reaches 192.0.2.9 (not even a default route).
    fake.world().routes = routes(&[("veth-a", [10, 244, 1, 2], 32, false)]);
    devices
        .sync(&addrs(&[[10, 244, 1, 2], [192, 0, 2, 9]]))
        .unwrap();
    assert_eq!(fake.world().masquerade, Some(false), "unrouted");
    // Routed again, but its veth refuses the hook: still off, retried.
    fake.world().routes = routes(&[
        ("veth-a", [10, 244, 1, 2], 32, false),
        ("veth-b", [10, 244, 1, 3], 32, false),
    ]);
    fake.world().broken.insert("veth-b".into());
    devices
        .sync(&addrs(&[[10, 244, 1, 2], [10, 244, 1, 3]]))
        .unwrap();
    assert_eq!(fake.world().masquerade, Some(false), "hook failed");
    fake.world().broken.clear();
    devices
        .sync(&addrs(&[[10, 244, 1, 2], [10, 244, 1, 3]]))
        .unwrap();
    assert_eq!(fake.world().masquerade, Some(true), "retried and hooked");
}

#[test]
fn a_bridge_is_one_device_for_every_pod_and_named_devices_are_left_alone() {
    let fake = Fake::default();
    {
        let mut world = fake.world();
        world.devices = [("eth0", 2), ("cni0", 5), ("br1", 6)]
            .map(|(d, i)| (d.to_string(), i))
            .into();
        world.routes = routes(&[
            ("cni0", [10, 244, 1, 0], 24, false),
            ("br1", [10, 245, 0, 0], 16, false),
        ]);
    }
    let mut devices = PodDevices::new(
        Box::new(fake.clone()),
        ["eth0".to_string()].into(),
        ["br1".to_string()].into(),
        // An earlier agent hooked a veth that is gone now.
        ["veth-old".to_string(), "br1".to_string()].into(),
    );
    devices
        .sync(&addrs(&[[10, 244, 1, 2], [10, 244, 1, 3], [10, 245, 0, 4]]))
        .unwrap();
    let world = fake.world();
    assert_eq!(world.attached, ["cni0"], "br1 is named: hooked at start");
    assert_eq!(world.detached, ["veth-old"], "taken over, then removed");
    assert_eq!(world.masquerade, Some(true));
}
