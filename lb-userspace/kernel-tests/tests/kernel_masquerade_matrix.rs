//! kube-proxy's masquerade matrix through the real programs: the Services
//! of TestInternalExternalMasquerade (pkg/proxy/nftables/proxier_test.go,
//! iptables/proxier_test.go the same), planned by the real planner and
//! written by the real writer, with its IP plan (pods and the detector's
//! CIDR 10.0.0.0/8, node 192.168.0.2, external client 203.0.113.2), run
//! under each of the test's four cases (a detector, none, masquerade-all,
//! masquerade-all without a detector; `--cluster-cidr` and
//! `--masquerade-all` through the agent's own config).
//!
//! - Sources from outside (an external client, a pod of another node whose
//!   packets are routed here) run through XDP under BPF_PROG_TEST_RUN: the
//!   backends new flows reach, and the source they leave with (the node's
//!   address and an SNAT port, or the client's own).
//! - Sources on this node (a pod, the node itself) run through the socket
//!   hooks' decision (`lb_trace_socket`): the backends sockets reach; their
//!   source is never rewritten (the kernel picks it at connect()), and
//!   `lb trace` names the rule by which kube-proxy would have masqueraded.
//!
//! Every row also goes through `lb trace`'s report, which must name the
//! masquerade decision (rule, address, ports) the datapath took.
//! externalIP rows mirror TestExternalTrafficPolicyLocal/Cluster.

mod common;

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddrV4},
};

use common::*;
use lb::{
    agent::masquerade_rules::MasqueradeConfig,
    datapath::{
        DatapathMaps as _,
        trace::{Tracer, build_frame},
    },
    desired::{self, Cidr},
    model::{NodeFacts, Protocol},
    ops::{
        explain::{self, Entry, TraceReport},
        inspect::Inspector,
    },
    plan::Applied,
};
use lb_common::{
    packet::tcp::{ACK, SYN},
    reason::Reason,
    snat::{SNAT_PORT_MAX, SNAT_PORT_MIN},
};

const N: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);
const X: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// A pod: of this node on the socket path, of another node from outside.
const P: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const PODS: &str = "10.0.0.0/8";

const fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

// svc1: eTP Cluster, iTP Cluster; svc2: eTP Local; svc3: iTP Local. Each
// has one local endpoint (10.180.0.x) and one remote (10.180.1.x).
const CIP1: Ipv4Addr = ip(172, 30, 0, 41);
const CIP2: Ipv4Addr = ip(172, 30, 0, 42);
const CIP3: Ipv4Addr = ip(172, 30, 0, 43);
const LB1: Ipv4Addr = ip(1, 2, 3, 4);
const LB2: Ipv4Addr = ip(5, 6, 7, 8);
const LB3: Ipv4Addr = ip(9, 10, 11, 12);
const EXT1: Ipv4Addr = ip(198, 51, 100, 11);
const EXT2: Ipv4Addr = ip(198, 51, 100, 12);
const A1: &[Ipv4Addr] = &[ip(10, 180, 0, 1), ip(10, 180, 1, 1)];
const A2: &[Ipv4Addr] = &[ip(10, 180, 0, 2), ip(10, 180, 1, 2)];
const A3: &[Ipv4Addr] = &[ip(10, 180, 0, 3), ip(10, 180, 1, 3)];
const L2: &[Ipv4Addr] = &[ip(10, 180, 0, 2)];
const L3: &[Ipv4Addr] = &[ip(10, 180, 0, 3)];

/// The test's cases (its `overrides`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    /// "base": `--cluster-cidr 10.0.0.0/8`.
    Detector,
    /// "no LocalTrafficDetector".
    NoDetector,
    /// "masqueradeAll" (with the detector).
    MasqueradeAll,
    /// "masqueradeAll, no LocalTrafficDetector".
    MasqueradeAllNoDetector,
}

const CASES: [Case; 4] = [
    Case::Detector,
    Case::NoDetector,
    Case::MasqueradeAll,
    Case::MasqueradeAllNoDetector,
];

impl Case {
    fn config(self) -> MasqueradeConfig {
        let detector = matches!(self, Case::Detector | Case::MasqueradeAll);
        let all = matches!(self, Case::MasqueradeAll | Case::MasqueradeAllNoDetector);
        let cidrs: Vec<Cidr> = if detector {
            vec![PODS.parse().unwrap()]
        } else {
            vec![]
        };
        MasqueradeConfig::new(&cidrs, all).unwrap()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum From {
    /// An external client, through XDP.
    Outside,
    /// A pod of another node, its packet routed here, through XDP.
    RemotePod,
    /// A pod of this node: the socket hooks.
    Pod,
    /// A process of this node: the socket hooks.
    Node,
}

impl From {
    fn addr(self) -> Ipv4Addr {
        match self {
            From::Outside => X,
            From::RemotePod | From::Pod => P,
            From::Node => N,
        }
    }

    fn xdp(self) -> bool {
        matches!(self, From::Outside | From::RemotePod)
    }
}

/// What kube-proxy does: the endpoints the random choice may pick, and
/// whether the connection is masqueraded.
type Verdict = (&'static [Ipv4Addr], bool);

struct Row {
    /// The upstream test and row name it mirrors.
    upstream: &'static str,
    from: From,
    to: (Ipv4Addr, u16),
    /// The "base" case.
    base: Verdict,
    /// The cases whose result differs from the base (asserted, as the
    /// upstream harness asserts its overrides).
    overrides: &'static [(Case, Verdict)],
    /// Where this datapath's backend set differs from kube-proxy's, and why
    /// (README "Not built yet").
    lb_differs: &'static [(Case, &'static [Ipv4Addr])],
}

const MA: Case = Case::MasqueradeAll;
const MAND: Case = Case::MasqueradeAllNoDetector;
const ND: Case = Case::NoDetector;

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // From outside (XDP): the external client.
    Row { upstream: "TestInternalExternalMasquerade: external to ClusterIP", from: From::Outside, to: (CIP1, 80), base: (A1, true), overrides: &[(ND, (A1, false))], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: external to NodePort", from: From::Outside, to: (N, 3001), base: (A1, true), overrides: &[], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: external to LB", from: From::Outside, to: (LB1, 80), base: (A1, true), overrides: &[], lb_differs: &[] },
    Row { upstream: "TestExternalTrafficPolicyCluster: external to external IP hits both endpoints, masqueraded", from: From::Outside, to: (EXT1, 80), base: (A1, true), overrides: &[], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: external to ClusterIP with eTP:Local", from: From::Outside, to: (CIP2, 80), base: (A2, true), overrides: &[(ND, (A2, false))], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: external to NodePort with eTP:Local", from: From::Outside, to: (N, 3002), base: (L2, false), overrides: &[], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: external to LB with eTP:Local", from: From::Outside, to: (LB2, 80), base: (L2, false), overrides: &[], lb_differs: &[] },
    Row { upstream: "TestExternalTrafficPolicyLocal: external to external IP hits only local endpoint", from: From::Outside, to: (EXT2, 80), base: (L2, false), overrides: &[], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: external to ClusterIP with iTP:Local", from: From::Outside, to: (CIP3, 80), base: (L3, true), overrides: &[(ND, (L3, false))], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: external to NodePort with iTP:Local", from: From::Outside, to: (N, 3003), base: (A3, true), overrides: &[], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: external to LB with iTP:Local", from: From::Outside, to: (LB3, 80), base: (A3, true), overrides: &[], lb_differs: &[] },
    // From outside (XDP): a pod of another node (the tracer counts any pod
    // of the detector's CIDR as "pod", whatever its node).
    Row { upstream: "TestInternalExternalMasquerade: pod to ClusterIP", from: From::RemotePod, to: (CIP1, 80), base: (A1, false), overrides: &[(MA, (A1, true)), (MAND, (A1, true))], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: pod to NodePort", from: From::RemotePod, to: (N, 3001), base: (A1, true), overrides: &[], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: pod to LB", from: From::RemotePod, to: (LB1, 80), base: (A1, true), overrides: &[], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: pod to ClusterIP with eTP:Local", from: From::RemotePod, to: (CIP2, 80), base: (A2, false), overrides: &[(MA, (A2, true)), (MAND, (A2, true))], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: pod to NodePort with eTP:Local", from: From::RemotePod, to: (N, 3002), base: (A2, false), overrides: &[(ND, (L2, false)), (MAND, (L2, false))], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: pod to LB with eTP:Local", from: From::RemotePod, to: (LB2, 80), base: (A2, false), overrides: &[(ND, (L2, false)), (MAND, (L2, false))], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: pod to ClusterIP with iTP:Local", from: From::RemotePod, to: (CIP3, 80), base: (L3, false), overrides: &[(MA, (L3, true)), (MAND, (L3, true))], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: pod to NodePort with iTP:Local", from: From::RemotePod, to: (N, 3003), base: (A3, true), overrides: &[], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: pod to LB with iTP:Local", from: From::RemotePod, to: (LB3, 80), base: (A3, true), overrides: &[], lb_differs: &[] },
    // This node's pods (socket hooks).
    Row { upstream: "TestInternalExternalMasquerade: pod to ClusterIP", from: From::Pod, to: (CIP1, 80), base: (A1, false), overrides: &[(MA, (A1, true)), (MAND, (A1, true))], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: pod to NodePort", from: From::Pod, to: (N, 3001), base: (A1, true), overrides: &[], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: pod to LB", from: From::Pod, to: (LB1, 80), base: (A1, true), overrides: &[], lb_differs: &[] },
    Row { upstream: "TestExternalTrafficPolicyCluster: pod to external IP hits both endpoints", from: From::Pod, to: (EXT1, 80), base: (A1, true), overrides: &[], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: pod to ClusterIP with eTP:Local", from: From::Pod, to: (CIP2, 80), base: (A2, false), overrides: &[(MA, (A2, true)), (MAND, (A2, true))], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: pod to NodePort with eTP:Local", from: From::Pod, to: (N, 3002), base: (A2, false), overrides: &[(ND, (L2, false)), (MAND, (L2, false))], lb_differs: &[(ND, A2), (MAND, A2)] },
    Row { upstream: "TestInternalExternalMasquerade: pod to LB with eTP:Local", from: From::Pod, to: (LB2, 80), base: (A2, false), overrides: &[(ND, (L2, false)), (MAND, (L2, false))], lb_differs: &[(ND, A2), (MAND, A2)] },
    Row { upstream: "TestExternalTrafficPolicyLocal: pod to external IP hits both endpoints", from: From::Pod, to: (EXT2, 80), base: (A2, false), overrides: &[(ND, (L2, false)), (MAND, (L2, false))], lb_differs: &[(ND, A2), (MAND, A2)] },
    Row { upstream: "TestInternalExternalMasquerade: pod to ClusterIP with iTP:Local", from: From::Pod, to: (CIP3, 80), base: (L3, false), overrides: &[(MA, (L3, true)), (MAND, (L3, true))], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: pod to NodePort with iTP:Local", from: From::Pod, to: (N, 3003), base: (A3, true), overrides: &[], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: pod to LB with iTP:Local", from: From::Pod, to: (LB3, 80), base: (A3, true), overrides: &[], lb_differs: &[] },
    // The node itself (socket hooks).
    Row { upstream: "TestInternalExternalMasquerade: node to ClusterIP", from: From::Node, to: (CIP1, 80), base: (A1, true), overrides: &[(ND, (A1, false))], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: node to NodePort", from: From::Node, to: (N, 3001), base: (A1, true), overrides: &[], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: node to LB", from: From::Node, to: (LB1, 80), base: (A1, true), overrides: &[], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: node to ClusterIP with eTP:Local", from: From::Node, to: (CIP2, 80), base: (A2, true), overrides: &[(ND, (A2, false))], lb_differs: &[] },
    // Upstream's row 14 sends to svc1's port 3001 (sic); iptables' row
    // "localhost to NodePort with eTP:Local" goes to 3002: that one.
    Row { upstream: "TestInternalExternalMasquerade [iptables]: localhost to NodePort with eTP:Local", from: From::Node, to: (N, 3002), base: (A2, true), overrides: &[], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: node to LB with eTP:Local", from: From::Node, to: (LB2, 80), base: (A2, true), overrides: &[], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: node to ClusterIP with iTP:Local", from: From::Node, to: (CIP3, 80), base: (L3, true), overrides: &[(ND, (L3, false))], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: node to NodePort with iTP:Local", from: From::Node, to: (N, 3003), base: (A3, true), overrides: &[], lb_differs: &[] },
    Row { upstream: "TestInternalExternalMasquerade: node to LB with iTP:Local", from: From::Node, to: (LB3, 80), base: (A3, true), overrides: &[], lb_differs: &[] },
];

impl Row {
    fn kube_proxy(&self, case: Case) -> Verdict {
        self.overrides
            .iter()
            .find(|(c, _)| *c == case)
            .map_or(self.base, |(_, v)| *v)
    }

    fn lb_backends(&self, case: Case) -> &'static [Ipv4Addr] {
        self.lb_differs
            .iter()
            .find(|(c, _)| *c == case)
            .map_or(self.kube_proxy(case).0, |(_, b)| b)
    }

    /// svc2's NodePort, LoadBalancer IP and externalIP.
    fn external_policy_local(&self) -> bool {
        self.to == (N, 3002) || [LB2, EXT2].contains(&self.to.0)
    }

    fn cluster_ip(&self) -> bool {
        [CIP1, CIP2, CIP3].contains(&self.to.0)
    }
}

/// One LoadBalancer Service of the test: ClusterIP, NodePort, LB IP and
/// (svc1, svc2) an externalIP, one endpoint here and one on node2.
fn service(n: u8, policy: &str) -> String {
    let external_ip = match n {
        1 => format!("externalIPs: [{EXT1}], "),
        2 => format!("externalIPs: [{EXT2}], "),
        _ => String::new(),
    };
    let lb = [LB1, LB2, LB3][usize::from(n - 1)];
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc{n}, namespace: ns{n}}}\nspec: {{type: LoadBalancer, clusterIP: 172.30.0.4{n}, {external_ip}{policy}ports: [{{name: p80, port: 80, nodePort: 300{n}}}]}}\nstatus: {{loadBalancer: {{ingress: [{{ip: {lb}}}]}}}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc{n}-1, namespace: ns{n}, labels: {{kubernetes.io/service-name: svc{n}}}}}\naddressType: IPv4\nports: [{{name: p80, port: 80}}]\nendpoints: [{{addresses: [10.180.0.{n}], nodeName: test-node}}, {{addresses: [10.180.1.{n}], nodeName: node2}}]\n---\n"
    )
}

/// The three Services, planned and applied; the node address, local
/// backends masqueraded (the pod hook's flag) and the case's rules, as the
/// agent writes them.
fn datapath(case: Case) -> TestDatapath {
    let mut t = TestDatapath::load_with(16, 65_536);
    let yaml = [
        service(1, ""),
        service(2, "externalTrafficPolicy: Local, "),
        service(3, "internalTrafficPolicy: Local, "),
    ]
    .concat();
    let facts = NodeFacts {
        name: "test-node".into(),
        addresses: vec![N.into()],
        zone: None,
    };
    let rules = desired::Rules {
        node_port_range: "3000-3100".parse().unwrap(),
        ..desired::Rules::default()
    };
    let mut applied = Applied::default();
    let problems = serve_manifests_as(&mut t.maps, &mut applied, &yaml, &facts, &rules);
    assert_eq!(problems, vec![]);
    t.maps.set_snat_address(Some(N)).unwrap();
    t.maps.set_masquerade_local_backends(true).unwrap();
    t.maps.set_masquerade_rules(&case.config().rules()).unwrap();
    assert_eq!(t.maps.masquerade_rules().unwrap(), case.config().rules());
    t
}

/// New flows (or sockets) per row: each of two endpoints is missed by all
/// of them with probability 2^-31.
const FLOWS: u16 = 32;

/// The backends new flows from outside reach, and whether every one left
/// masqueraded (from N and an SNAT port) or every one kept its source.
/// Each row's flows take their own source ports: two rows' flows from one
/// client port to one endpoint would share a reply tuple (conntrack would
/// remap the second's port; the table here refuses it).
fn through_xdp(t: &TestDatapath, index: u16, row: &Row) -> (BTreeSet<Ipv4Addr>, bool) {
    let src = row.from.addr();
    let mut backends = BTreeSet::new();
    let mut masqueraded = BTreeSet::new();
    for i in 0..FLOWS {
        let sport = 20_000 + index * FLOWS + i;
        let (action, out) = t.run_xdp(&tcp_frame(src, sport, row.to.0, row.to.1, true, b""));
        assert_eq!(action, XDP_PASS, "{}", row.upstream);
        let p = check_frame(&out);
        backends.insert(p.dst);
        let snat = (p.src, (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&p.sport)) == (N, true);
        let kept = (p.src, p.sport) == (src, sport);
        assert!(
            snat || kept,
            "{}: left from {}:{}",
            row.upstream,
            p.src,
            p.sport
        );
        masqueraded.insert(snat);
    }
    assert_eq!(
        masqueraded.len(),
        1,
        "{}: one decision per row",
        row.upstream
    );
    (backends, masqueraded.contains(&true))
}

/// The backends sockets of this node reach (one cookie each).
fn through_socket_hooks(tracer: &Tracer, row: &Row) -> BTreeSet<Ipv4Addr> {
    let frame = trace_frame(row);
    (1..=u64::from(FLOWS))
        .map(|cookie| {
            let outcome = tracer.trace_socket(&frame, cookie).unwrap();
            assert_eq!(
                outcome.record.reason,
                Reason::SockConnect as u32,
                "{}",
                row.upstream
            );
            let p = check_frame(&outcome.packet_out);
            assert_eq!(
                p.src,
                row.from.addr(),
                "{}: the socket path keeps the source",
                row.upstream
            );
            p.dst
        })
        .collect()
}

fn trace_frame(row: &Row) -> Vec<u8> {
    build_frame(
        SocketAddrV4::new(row.from.addr(), 40_999),
        SocketAddrV4::new(row.to.0, row.to.1),
        Protocol::Tcp,
    )
}

/// `lb trace` of the row.
fn report(tracer: &Tracer, inspector: &Inspector, row: &Row) -> TraceReport {
    let frame = trace_frame(row);
    let (entry, outcome) = match row.from {
        From::Outside | From::RemotePod => (Entry::External, tracer.trace_external(&frame)),
        From::Pod => (Entry::Pod, tracer.trace_socket(&frame, 1)),
        From::Node => (Entry::Node, tracer.trace_socket(&frame, 1)),
    };
    explain::report(
        entry,
        SocketAddrV4::new(row.from.addr(), 40_999),
        SocketAddrV4::new(row.to.0, row.to.1),
        Protocol::Tcp,
        &outcome.unwrap().record,
        inspector,
    )
}

/// The words `lb trace`'s rule must hold for a masquerade decision.
fn rule_words(row: &Row, case: Case, masq: bool) -> &'static str {
    let all = matches!(case, Case::MasqueradeAll | Case::MasqueradeAllNoDetector);
    let detector = matches!(case, Case::Detector | Case::MasqueradeAll);
    if row.cluster_ip() {
        return match (all, detector, masq) {
            (true, _, _) => "--masquerade-all",
            (false, true, true) => "outside --cluster-cidr",
            (false, true, false) => "inside --cluster-cidr",
            (false, false, _) => "no --cluster-cidr",
        };
    }
    match (row.from, masq) {
        (From::RemotePod, false) if detector => "short-circuited to every endpoint",
        (_, false) => "policy Local",
        (From::Node, true) if row.external_policy_local() => "masquerade local traffic",
        (_, true) => "policy Cluster",
    }
}

fn check_report(report: &TraceReport, row: &Row, case: Case, masq: bool) {
    let what = format!("{} ({case:?}): {:?}", row.upstream, report.steps);
    assert_eq!(report.verdict, "dnat", "{what}");
    let view = report.masquerade.as_ref().expect("a masquerade decision");
    let words = rule_words(row, case, masq);
    // A ClusterIP from outside, and a pod short-circuited past eTP Local,
    // are served by the frontend's internal-scope entry.
    let internal = !row.from.xdp() || row.cluster_ip() || words.contains("short-circuited");
    let scope = report.frontend.as_ref().map(|f| f.scope);
    assert_eq!(
        scope,
        Some(if internal { "internal" } else { "external" }),
        "{what}"
    );
    if row.from.xdp() {
        assert!(
            view.rule.contains(words),
            "{what}: rule {:?}, want {words:?}",
            view.rule
        );
        assert_eq!(report.snat, masq, "{what}");
        assert_eq!(view.address.is_some(), masq, "{what}");
        if masq {
            assert_eq!(view.address.as_deref(), Some("192.168.0.2"), "{what}");
            assert_eq!(view.ports.as_deref(), Some("61000-65535"), "{what}");
            assert!(view.port.is_some_and(|p| p >= SNAT_PORT_MIN), "{what}");
        }
    } else {
        assert!(
            !report.snat,
            "{what}: nothing is masqueraded on the socket path"
        );
        assert!(view.rule.starts_with("socket path"), "{what}");
        let kube_proxy = view.kube_proxy_masquerades;
        assert_eq!(kube_proxy.is_some(), masq, "{what}: {kube_proxy:?}");
        if let Some(rule) = kube_proxy {
            assert!(rule.contains(words), "{what}: {rule:?}, want {words:?}");
            let why = view.not_applied_because.unwrap_or_default();
            let whose = if row.from == From::Pod {
                "pod's address"
            } else {
                "route to the backend"
            };
            assert!(why.contains(whose), "{what}: {why}");
        }
    }
}

fn run_case(case: Case) {
    let t = datapath(case);
    let tracer = Tracer::load(&t.pin_dir).unwrap();
    let inspector = Inspector::open(tracer.maps().unwrap()).unwrap();
    for (index, row) in (0..).zip(ROWS) {
        let (kube_proxy_backends, masq) = row.kube_proxy(case);
        let want: BTreeSet<Ipv4Addr> = row.lb_backends(case).iter().copied().collect();
        if row.from.xdp() {
            let (backends, masqueraded) = through_xdp(&t, index, row);
            assert_eq!(backends, want, "{} ({case:?})", row.upstream);
            assert_eq!(masqueraded, masq, "{} ({case:?}): masquerade", row.upstream);
        } else {
            let backends = through_socket_hooks(&tracer, row);
            assert_eq!(backends, want, "{} ({case:?})", row.upstream);
        }
        if row.lb_differs.is_empty() {
            assert_eq!(want.len(), kube_proxy_backends.len());
        }
        check_report(&report(&tracer, &inspector, row), row, case, masq);
    }
}

#[test]
fn with_the_cluster_cidr_detector() {
    run_case(Case::Detector);
}

#[test]
fn with_no_local_traffic_detector() {
    run_case(Case::NoDetector);
}

#[test]
fn with_masquerade_all() {
    run_case(Case::MasqueradeAll);
}

#[test]
fn with_masquerade_all_and_no_detector() {
    run_case(Case::MasqueradeAllNoDetector);
}

/// Upstream's harness fails an override equal to its base; so does this
/// table (every override is a real difference), and each case is run.
#[test]
fn every_override_differs_from_its_base() {
    for row in ROWS {
        for (case, verdict) in row.overrides {
            assert_ne!(*verdict, row.base, "{} ({case:?})", row.upstream);
        }
    }
    assert_eq!(CASES.len(), 4);
}

/// A ClusterIP from outside is a flow like any XDP flow: its entry holds
/// the backend, and the backend's replies go back from the ClusterIP.
/// Unmasqueraded (no detector), svc3's local endpoint answers the client
/// itself, through tc egress on the external device; masqueraded (the
/// source is outside --cluster-cidr), it answers the node's address and
/// SNAT port, through the pod hook (`--pod-device`).
#[test]
fn a_cluster_ip_from_outside_is_answered_from_the_cluster_ip() {
    let local = ip(10, 180, 0, 3);
    let t = datapath(Case::NoDetector);
    let (_, out) = t.run_xdp(&tcp_frame(X, 41000, CIP3, 80, true, b""));
    let p = check_frame(&out);
    assert_eq!((p.src, p.sport, p.dst), (X, 41000, local));
    let reply = tcp_flags_frame(local, 80, X, 41000, SYN | ACK, b"");
    let (_, out) = t.run_tc(&reply);
    let p = check_frame(&out);
    assert_eq!((p.src, p.sport, p.dst, p.dport), (CIP3, 80, X, 41000));
    let (_, out) = t.run_xdp(&tcp_flags_frame(X, 41000, CIP3, 80, ACK, b"data"));
    assert_eq!(check_frame(&out).dst, local);
    assert_eq!(t.stat(Reason::DnatEstablished), 1);

    let t = datapath(Case::Detector);
    let (_, out) = t.run_xdp(&tcp_frame(X, 41000, CIP3, 80, true, b""));
    let p = check_frame(&out);
    assert_eq!((p.src, p.dst), (N, local));
    let reply = tcp_flags_frame(local, 80, N, p.sport, SYN | ACK, b"");
    let (_, out) = t.dp().run_tc_pod_ingress(&reply).unwrap();
    let p = check_frame(&out);
    assert_eq!((p.src, p.sport, p.dst, p.dport), (CIP3, 80, X, 41000));
    assert_eq!(t.stat(Reason::ReverseSnat), 1);
}

/// TestClusterIPGeneral "hairpin to cluster IP": a connection whose source
/// is the endpoint chosen is masqueraded (every endpoint chain begins with
/// `ip saddr <endpoint> jump mark-for-masquerade`), with no detector too.
/// From outside: svc1's remote endpoint reaches svc1's ClusterIP through
/// this node (its packets routed here) and may be chosen itself.
#[test]
fn hairpin_is_masqueraded_without_a_detector() {
    let t = datapath(Case::NoDetector);
    let me = ip(10, 180, 1, 1);
    let mut seen = BTreeSet::new();
    for sport in 42_000..42_000 + FLOWS {
        let (_, out) = t.run_xdp(&tcp_frame(me, sport, CIP1, 80, true, b""));
        let p = check_frame(&out);
        let masqueraded = p.src == N;
        assert_eq!(
            masqueraded,
            p.dst == me,
            "masquerade exactly when hairpinned"
        );
        seen.insert(masqueraded);
    }
    assert_eq!(seen.len(), 2, "both endpoints chosen");
    let tracer = Tracer::load(&t.pin_dir).unwrap();
    let inspector = Inspector::open(tracer.maps().unwrap()).unwrap();
    let from = SocketAddrV4::new(me, 43_000);
    let hairpinned = (43_000..43_000 + FLOWS).find_map(|sport| {
        let from = SocketAddrV4::new(me, sport);
        let frame = build_frame(from, SocketAddrV4::new(CIP1, 80), Protocol::Tcp);
        let outcome = tracer.trace_external(&frame).unwrap();
        (Ipv4Addr::from(outcome.record.nat_addr_be.to_ne_bytes()) == me).then_some((from, outcome))
    });
    let (from, outcome) = hairpinned.unwrap_or_else(|| panic!("no trace from {from} chose itself"));
    let report = explain::report(
        Entry::External,
        from,
        SocketAddrV4::new(CIP1, 80),
        Protocol::Tcp,
        &outcome.record,
        &inspector,
    );
    let view = report.masquerade.unwrap();
    assert!(view.rule.starts_with("hairpin"), "{}", view.rule);
    assert!(report.snat);
}
