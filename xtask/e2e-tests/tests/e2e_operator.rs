//! End-to-end, for operators: `lb trace` tells what real traffic meets, and
//! changes nothing; the list commands show what the manifests say. Same
//! topology and rules as `e2e.rs` (root, bounded waits, full cleanup).

use std::{
    net::Ipv4Addr,
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use xtask::{
    demo::{Chat, Env, FRONTENDS, Origin, exclusive_env},
    manifests::EDGE_CASES,
    testbed::{CLIENT_ADDR, NODE_ADDR, POD_TCP_PORT, POD_UDP_PORT, pod_addr},
};

/// The demo environment plus the reject and drop Services.
fn env() -> (std::sync::MutexGuard<'static, ()>, Env) {
    let (guard, env) = exclusive_env();
    std::fs::write(env.manifests().join("edge-cases.yaml"), EDGE_CASES).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !services(&env)
        .iter()
        .any(|s| s["service"] == "default/remote-only:http")
    {
        assert!(
            Instant::now() < deadline,
            "edge-case services never appeared:\n{}",
            env.agent_log_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
    (guard, env)
}

fn lb(env: &Env, args: &[&str]) -> Output {
    Command::new(&env.lb)
        .args(args)
        .arg("--pin-dir")
        .arg(&env.bed.pin_dir)
        .output()
        .unwrap()
}

fn json(env: &Env, args: &[&str]) -> Value {
    let out = lb(env, &[args, &["-o", "json"]].concat());
    assert!(
        out.status.success(),
        "lb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("lb {args:?} printed no JSON ({e})"))
}

fn services(env: &Env) -> Vec<Value> {
    json(env, &["service", "list"]).as_array().unwrap().clone()
}

/// Everything a trace must leave alone: connections (without their
/// ever-growing ages), counters, backends and services.
fn datapath_state(env: &Env) -> Value {
    let mut conns = json(env, &["conntrack", "list"]);
    for conn in conns.as_array_mut().unwrap() {
        let conn = conn.as_object_mut().unwrap();
        conn.remove("age_seconds");
        conn.remove("idle_seconds");
    }
    // ARP between the client and the node reaches XDP at any moment and
    // counts as pass_not_ipv4; an IPv4 trace cannot move that counter.
    let mut stats = json(env, &["stats"]);
    stats["reasons"]
        .as_array_mut()
        .unwrap()
        .retain(|r| r["reason"] != "pass_not_ipv4");
    serde_json::json!({
        "conntrack": conns,
        "stats": stats,
        "backends": json(env, &["backend", "list"]),
        "services": json(env, &["service", "list"]),
    })
}

/// Traces, and checks the trace left the datapath exactly as it was.
fn trace(env: &Env, from: &str, src: &str, dst: &str, udp: bool, cookie: Option<u64>) -> Value {
    let before = datapath_state(env);
    let protocol = if udp { "udp" } else { "tcp" };
    let mut args = vec![
        "trace",
        "--from",
        from,
        "--src",
        src,
        "--dst",
        dst,
        "--protocol",
        protocol,
    ];
    let cookie = cookie.map(|c| c.to_string());
    if let Some(cookie) = &cookie {
        args.extend(["--cookie", cookie]);
    }
    let report = json(env, &args);
    assert_eq!(
        datapath_state(env),
        before,
        "a trace of {dst} changed the datapath"
    );
    report
}

/// The pod an `ip:port` backend is.
fn pod_at(backend: &str) -> String {
    let ip: Ipv4Addr = backend.split(':').next().unwrap().parse().unwrap();
    let index = (0..3)
        .find(|i| pod_addr(*i) == ip)
        .unwrap_or_else(|| panic!("{backend} is no pod"));
    format!("pod-{}", index + 1)
}

#[test]
fn trace_reports_what_real_traffic_meets() {
    let (_serial, mut env) = env();

    // From outside: the flow hash covers the 5-tuple, so the real request
    // from the same source port must land where the trace says.
    for (i, frontend) in FRONTENDS
        .iter()
        .filter(|f| f.origin == Origin::Client)
        .enumerate()
    {
        let port = 41000 + i as u16;
        let report = trace(
            &env,
            "external",
            &format!("{CLIENT_ADDR}:{port}"),
            frontend.addr,
            frontend.udp,
            None,
        );
        assert_eq!(report["verdict"], "dnat", "{}: {report:#}", frontend.label);
        assert_eq!(report["snat"], false);
        // The demo's external frontends are policy Cluster: kube-proxy
        // masquerades them to the node's address (--node-address), which
        // the agent wrote and the datapath recorded.
        let masquerade = &report["masquerade"];
        assert_eq!(
            masquerade["rule"], "external traffic, policy Cluster: masquerade",
            "{}: {report:#}",
            frontend.label
        );
        assert_eq!(masquerade["address"], NODE_ADDR.to_string());
        assert_eq!(masquerade["ports"], "61000-65535");
        assert_eq!(masquerade["applied"], false);
        assert_eq!(report["decided_by"], "maglev");
        let backend = report["backend"].as_str().unwrap();
        let pod_port = if frontend.udp {
            POD_UDP_PORT
        } else {
            POD_TCP_PORT
        };
        assert!(backend.ends_with(&format!(":{pod_port}")), "{backend}");
        let mut cmd = env.probe_from(Origin::Client);
        cmd.args([
            if frontend.udp { "udp" } else { "tcp" },
            frontend.addr,
            "--source-port",
            &port.to_string(),
        ]);
        let answer = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
        assert_eq!(
            answer.trim(),
            pod_at(backend),
            "{} from port {port}: trace said {backend}",
            frontend.label
        );
        // Now the flow exists: for UDP the connection table decides. The
        // TCP connection was closed (FIN), so the trace's SYN opens a new
        // one on the same tuple (as the kernel reopens a closed tuple), and
        // Maglev picks again: the same backend.
        let again = trace(
            &env,
            "external",
            &format!("{CLIENT_ADDR}:{port}"),
            frontend.addr,
            frontend.udp,
            None,
        );
        let decider = if frontend.udp {
            "connection-table"
        } else {
            "maglev"
        };
        assert_eq!(
            (again["decided_by"].as_str(), again["backend"].as_str()),
            (Some(decider), Some(backend)),
            "{}",
            frontend.label
        );
    }

    // From pods: the socket hooks hash the socket's cookie, so a trace with
    // a real connection's cookie must name the pod that connection reached.
    for frontend in FRONTENDS
        .iter()
        .filter(|f| matches!(f.origin, Origin::Pod(_)) && !f.udp)
    {
        let Origin::Pod(index) = frontend.origin else {
            unreachable!()
        };
        let mut chat = Chat::open(&mut env, frontend.origin, frontend.addr);
        let answered = chat.ask();
        let src = format!("{}:0", pod_addr(index));
        let report = trace(&env, "pod", &src, frontend.addr, false, chat.cookie);
        assert_eq!(report["verdict"], "dnat", "{}: {report:#}", frontend.label);
        assert_eq!(report["decided_by"], "socket-hash");
        assert_eq!(
            report["masquerade"]["rule"],
            lb_common::snat::Masquerade::NotNeeded.rule()
        );
        assert_eq!(
            pod_at(report["backend"].as_str().unwrap()),
            answered,
            "{}",
            frontend.label
        );
    }

    // No endpoints at all: rejected, from outside (ICMP port unreachable,
    // so the client's connect() is refused at once) and from a pod.
    let report = trace(
        &env,
        "external",
        &format!("{CLIENT_ADDR}:41100"),
        "198.51.100.1:30090",
        false,
        None,
    );
    assert_eq!(
        (report["verdict"].as_str(), report["service"].as_str()),
        (Some("reject"), Some("default/empty:http"))
    );
    assert_eq!(report["reason"], "reject_no_endpoints");
    assert_eq!(report["backend"], Value::Null);
    let refused = env
        .probe_from(Origin::Client)
        .args(["tcp", "198.51.100.1:30090"])
        .output()
        .unwrap();
    let refused = String::from_utf8_lossy(&refused.stdout);
    assert!(refused.contains("refused"), "{refused}");
    let report = trace(
        &env,
        "pod",
        &format!("{}:0", pod_addr(0)),
        "192.0.2.20:80",
        false,
        None,
    );
    assert_eq!(report["verdict"], "reject");
    let refused = env
        .probe_from(Origin::Pod(0))
        .args(["tcp", "192.0.2.20:80"])
        .output()
        .unwrap();
    let refused = String::from_utf8_lossy(&refused.stdout);
    assert!(refused.contains("refused"), "{refused}");

    // externalTrafficPolicy=Local with no endpoint on this node: dropped
    // from outside (the client only times out), while a pod still gets in.
    let report = trace(
        &env,
        "external",
        &format!("{CLIENT_ADDR}:41101"),
        "198.51.100.1:30091",
        false,
        None,
    );
    assert_eq!(
        (report["verdict"].as_str(), report["reason"].as_str()),
        (Some("drop"), Some("drop_no_local_endpoint"))
    );
    let dropped = env
        .probe_from(Origin::Client)
        .args(["--timeout-ms", "700", "tcp", "198.51.100.1:30091"])
        .output()
        .unwrap();
    let dropped = String::from_utf8_lossy(&dropped.stdout);
    assert!(
        dropped.starts_with("error:") && !dropped.contains("refused"),
        "{dropped}"
    );
    let report = trace(
        &env,
        "pod",
        &format!("{}:0", pod_addr(1)),
        "198.51.100.1:30091",
        false,
        None,
    );
    // Pods and the node reach every endpoint, the remote one included.
    assert_eq!(
        (report["verdict"].as_str(), report["backend"].as_str()),
        (Some("dnat"), Some("203.0.113.50:8080")),
        "{report:#}"
    );

    // Not a frontend at all: passed untouched.
    let report = trace(
        &env,
        "external",
        &format!("{CLIENT_ADDR}:41102"),
        "198.51.100.1:22",
        false,
        None,
    );
    assert_eq!(
        (report["verdict"].as_str(), report["service"].as_str()),
        (Some("pass"), None)
    );
}

#[test]
fn list_commands_show_what_the_manifests_say() {
    let (_serial, env) = env();
    let services = services(&env);
    let names: Vec<&str> = services
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "default/empty:http",
            "default/remote-only:http",
            "default/web-lb:http",
            "default/web-nodeport:dns",
            "default/web-nodeport:http",
            "default/web:dns",
            "default/web:http"
        ]
    );
    let find = |name: &str| services.iter().find(|s| s["service"] == name).unwrap();
    // web-lb: ClusterIP, LoadBalancer IP and NodePort, external and internal.
    let web_lb = find("default/web-lb:http");
    let mut frontends: Vec<String> = web_lb["frontends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{} {} {}",
                f["kind"].as_str().unwrap(),
                f["address"].as_str().unwrap(),
                f["scope"].as_str().unwrap()
            )
        })
        .collect();
    frontends.sort();
    assert_eq!(
        frontends,
        [
            "cluster-ip 192.0.2.12:80 internal",
            "load-balancer 192.0.2.100:80 external",
            "load-balancer 192.0.2.100:80 internal",
            "node-port 198.51.100.1:30081 external",
            "node-port 198.51.100.1:30081 internal"
        ]
    );
    for frontend in web_lb["frontends"].as_array().unwrap() {
        let backends: Vec<&str> = frontend["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["address"].as_str().unwrap())
            .collect();
        assert_eq!(
            backends,
            [
                "203.0.113.11:8080",
                "203.0.113.12:8080",
                "203.0.113.13:8080"
            ]
        );
    }
    let remote = find("default/remote-only:http");
    assert_eq!(remote["external_traffic_policy"], "Local");
    let external = remote["frontends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["scope"] == "external")
        .unwrap();
    assert_eq!(
        (
            external["when_empty"].as_str(),
            external["backends"].as_array().unwrap().len()
        ),
        (Some("drop"), 0)
    );

    let backends = json(&env, &["backend", "list"]);
    // Three pods, TCP and UDP each, and remote-only's endpoint on node-b.
    assert_eq!(backends.as_array().unwrap().len(), 7, "{backends:#}");

    // A flow from a known port shows up, filtered by port.
    let nodeport = FRONTENDS
        .iter()
        .find(|f| f.addr == "198.51.100.1:30080")
        .unwrap();
    let mut cmd = env.probe_from(Origin::Client);
    cmd.args(["tcp", nodeport.addr, "--source-port", "41200"]);
    let pod = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
    let conns = json(&env, &["conntrack", "list", "--port", "41200"]);
    let conns = conns.as_array().unwrap();
    assert_eq!(conns.len(), 1, "{conns:#?}");
    assert_eq!(conns[0]["client"], format!("{CLIENT_ADDR}:41200"));
    assert_eq!(conns[0]["service"], "default/web-nodeport:http");
    assert_eq!(pod_at(conns[0]["backend"].as_str().unwrap()), pod.trim());

    let stats = json(&env, &["stats"]);
    let count = |name: &str| {
        stats["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["reason"] == name)
            .unwrap()["count"]
            .as_u64()
            .unwrap()
    };
    assert!(
        count("dnat_new") >= 1 && count("reverse_nat") >= 1,
        "{stats:#}"
    );
    let web_nodeport = stats["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "default/web-nodeport:http")
        .unwrap();
    assert!(
        web_nodeport["new_flows"].as_u64().unwrap() >= 1,
        "{stats:#}"
    );

    // Human tables too.
    let table = String::from_utf8(lb(&env, &["service", "list"]).stdout).unwrap();
    assert!(
        table.starts_with("SERVICE") && table.contains("default/web-lb:http"),
        "{table}"
    );
}

#[test]
fn commands_say_what_to_do_when_no_agent_runs() {
    let out = Command::new(xtask::traffic::target_bin("lb"))
        .args([
            "service",
            "list",
            "--pin-dir",
            "/sys/fs/bpf/lb-no-such-agent",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is `lb agent` running"), "{err}");
    let out = Command::new(xtask::traffic::target_bin("lb"))
        .args([
            "trace",
            "--pin-dir",
            "/sys/fs/bpf/lb-no-such-agent",
            "--src",
            "198.51.100.2:1",
            "--dst",
            "198.51.100.1:2",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no lb datapath pinned"), "{err}");
}
