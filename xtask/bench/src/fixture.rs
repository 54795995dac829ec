//! The system under test: the real agent (release build) on the testbed's
//! node, with `services` Services loaded from manifests, the way a user
//! runs it. Sections measure the programs it loaded over the maps it
//! filled; nothing is loaded or written behind its back.
//!
//! The target Service (the one traffic is sent to) has three real pods;
//! the other `services - 1` are fillers with ten endpoints each on
//! addresses nothing routes, so they cost what Services cost (map entries,
//! tables, rules) without ever receiving a packet.

use std::{
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use lb::datapath::{DatapathMaps, KernelMaps, LiveProgram};
use xtask::{
    testbed::{EXTERNAL_DEVICE, POD_TCP_PORT, POD_UDP_PORT, Testbed, pod_addr},
    traffic::target_dir,
};

use crate::kube_proxy_rules::{ServiceShape, filler_services};

/// The target Service's frontends.
pub const TARGET_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub const TARGET_TCP_NODE_PORT: u16 = 30080;
pub const TARGET_UDP_NODE_PORT: u16 = 30053;
/// A Service with no endpoints (its frontends reject).
pub const EMPTY_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
pub const EMPTY_NODE_PORT: u16 = 30090;
/// Pods behind the target Service.
pub const PODS: usize = 3;
/// A Service whose endpoints are on another node (masqueraded from
/// outside, policy Cluster): its ClusterIP and NodePort, and its endpoints,
/// enough that the bench's new flows never run out of SNAT ports
/// (4,536 per endpoint).
pub const REMOTE_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 30);
pub const REMOTE_NODE_PORT: u16 = 30085;
pub const REMOTE_UDP_NODE_PORT: u16 = 30086;
pub const REMOTE_PODS: usize = 8;

/// The remote Service's endpoint `i` on node-b (routed only where the
/// testbed has node-b: the forwarding section's; the per-packet section
/// only runs programs). The testbed's own numbering.
pub fn remote_pod_addr(i: usize) -> Ipv4Addr {
    xtask::testbed::remote_pod_addr(i)
}
/// Endpoints of each filler Service, as design.md's scaling figures use.
pub const FILLER_ENDPOINTS: usize = 10;

/// The endpoints each filler gets at `services` Services: ten, or fewer
/// where ten each would pass the backends lb can hold (`DEFAULT_MAX_BACKENDS`, `--max-backends`);
/// kube-proxy's rules are generated from the same shapes, so comparisons
/// stay like for like. The report says when it is fewer.
pub fn filler_endpoints(services: usize) -> usize {
    let fillers = services.saturating_sub(1).max(1);
    let room = lb_common::DEFAULT_MAX_BACKENDS as usize - 64;
    FILLER_ENDPOINTS.min(room / fillers).max(1)
}

/// The most Services lb can hold (service ids; `MAX_SERVICES`), less the
/// bench's own two.
pub fn max_services() -> usize {
    lb_common::MAX_SERVICES as usize - 3
}

/// A release binary of the workspace.
pub fn release_bin(name: &str) -> PathBuf {
    target_dir().join("release").join(name)
}

pub struct AgentUnderTest {
    pub bed: Testbed,
    pub workdir: PathBuf,
    pub services: usize,
    agent: Option<Child>,
    /// Arguments beyond the testbed's own.
    agent_args: Vec<String>,
}

impl AgentUnderTest {
    /// Builds the testbed, writes the manifests, starts the pods and the
    /// agent, and waits until the agent has programmed every Service.
    pub fn start(services: usize) -> Result<AgentUnderTest> {
        Self::start_on(services, Testbed::new(PODS)?, &[])
    }

    /// [`Self::start`] on a testbed whose pods are routed veths
    /// ([`Testbed::routed`]), with `agent_args` added.
    pub fn start_routed(services: usize, agent_args: &[&str]) -> Result<AgentUnderTest> {
        Self::start_on(services, Testbed::routed(PODS)?, agent_args)
    }

    /// [`Self::start`] on a testbed with node-b and the remote Service's
    /// pods there, the agent attached to the link toward node-b too (where
    /// the masqueraded replies come back), with `agent_args` added.
    pub fn start_two_nodes(services: usize, agent_args: &[&str]) -> Result<AgentUnderTest> {
        let bed = Testbed::with_remote_node(PODS, REMOTE_PODS)?;
        let mut args = vec!["--device", xtask::testbed::NODE_LINK_DEVICE];
        args.extend_from_slice(agent_args);
        Self::start_on(services, bed, &args)
    }

    fn start_on(services: usize, mut bed: Testbed, agent_args: &[&str]) -> Result<AgentUnderTest> {
        let probe = release_bin("lb-probe");
        let workdir = std::env::temp_dir().join(format!("{}-bench", bed.prefix));
        let manifests = workdir.join("manifests");
        fs::create_dir_all(&manifests)?;
        fs::write(manifests.join("services.yaml"), manifests_text(services))?;
        bed.start_pod_servers(&probe)?;
        let mut aut = AgentUnderTest {
            bed,
            workdir,
            services,
            agent: None,
            agent_args: agent_args.iter().map(|a| a.to_string()).collect(),
        };
        aut.start_agent()?;
        Ok(aut)
    }

    pub fn manifests(&self) -> PathBuf {
        self.workdir.join("manifests")
    }

    pub fn agent_log(&self) -> PathBuf {
        self.workdir.join("agent.log")
    }

    fn start_agent(&mut self) -> Result<()> {
        let log = fs::File::create(self.agent_log())?;
        let child = self
            .bed
            .agent_command(&release_bin("lb"), &self.manifests())
            .args(["--max-tables", &max_tables(self.services).to_string()])
            .args(&self.agent_args)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting lb agent")?;
        self.agent = Some(child);
        self.wait_programmed(Duration::from_secs(300))
    }

    /// Waits until every frontend of the manifests is in the maps.
    pub fn wait_programmed(&mut self, limit: Duration) -> Result<()> {
        let want = expected_frontends(self.services);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self
                .agent
                .as_mut()
                .and_then(|a| a.try_wait().ok().flatten())
            {
                bail!("lb agent exited with {status}:\n{}", self.log_tail());
            }
            if let Ok(maps) = KernelMaps::open_pinned(&self.bed.pin_dir)
                && maps.frontends().map(|f| f.len()).unwrap_or(0) >= want
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the agent did not program {want} frontends within {limit:?}:\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The XDP program the agent attached to the node's external device.
    pub fn xdp_program(&self) -> Result<LiveProgram> {
        LiveProgram::from_pinned_link(&self.link_pin("lb_xdp_ingress"))
    }

    /// The tc egress program the agent attached to the external device.
    pub fn tc_egress_program(&self) -> Result<LiveProgram> {
        LiveProgram::from_pinned_link(&self.link_pin("lb_tc_egress"))
    }

    fn link_pin(&self, program: &str) -> PathBuf {
        self.bed
            .pin_dir
            .join("links")
            .join(format!("{program}@{EXTERNAL_DEVICE}"))
    }

    /// The agent's process id.
    pub fn pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// The agent's resident memory now and at its peak, in KiB
    /// (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self) -> Result<(u64, u64)> {
        process_memory_kib(self.pid().context("the agent is not running")?)
    }

    fn log_tail(&self) -> String {
        log_tail(&self.agent_log(), 30)
    }

    /// Runs `lb` (release) against the agent's pin directory, inside the
    /// node's namespace.
    pub fn lb_command(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!(
            "--net={}",
            self.bed.netns_path(&self.bed.node_ns()).display()
        ))
        .arg(release_bin("lb"));
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }
}

impl Drop for AgentUnderTest {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        let _ = fs::remove_dir_all(&self.workdir);
    }
}

/// A process's resident memory now and at its peak, in KiB (`VmRSS`,
/// `VmHWM` of /proc/PID/status).
pub fn process_memory_kib(pid: u32) -> Result<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// The last `lines` lines of an agent's log, for error messages.
pub fn log_tail(log: &Path, lines: usize) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Maglev tables enough for every Service (fillers have distinct endpoint
/// sets, so none share a table), with room for a change.
pub fn max_tables(services: usize) -> u32 {
    (services as u32 * 2 + 16).max(lb_common::DEFAULT_MAX_TABLES)
}

/// Frontends the manifests produce: the target's ClusterIP (TCP, UDP) and
/// NodePorts (TCP, UDP, each in both scopes), the empty Service's ClusterIP
/// and NodePort (both scopes), the remote Service's likewise (TCP, UDP),
/// one ClusterIP per filler.
pub fn expected_frontends(services: usize) -> usize {
    2 + 4 + 1 + 2 + 2 + 4 + services.saturating_sub(1)
}

/// The filler Services and the target Service, kube-proxy's shapes (the
/// target last, where iptables' linear KUBE-SERVICES reaches it last).
pub fn service_shapes(services: usize) -> Vec<ServiceShape> {
    let mut shapes = filler_services(services.saturating_sub(1), filler_endpoints(services));
    shapes.push(ServiceShape {
        name: "bench/target:http".into(),
        cluster_ip: TARGET_CLUSTER_IP,
        port: 80,
        node_port: Some(TARGET_TCP_NODE_PORT),
        endpoints: (0..PODS).map(|i| (pod_addr(i), POD_TCP_PORT)).collect(),
    });
    shapes
}

/// The manifests of `services` Services: the target (TCP and UDP ports,
/// NodePorts), an empty Service, and the fillers.
pub fn manifests_text(services: usize) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "apiVersion: v1\nkind: Service\nmetadata: {{name: target, namespace: bench}}\n\
         spec:\n  type: NodePort\n  clusterIP: {TARGET_CLUSTER_IP}\n  ports:\n\
         \x20 - {{name: http, port: 80, targetPort: {POD_TCP_PORT}, nodePort: {TARGET_TCP_NODE_PORT}, protocol: TCP}}\n\
         \x20 - {{name: dns, port: 53, targetPort: {POD_UDP_PORT}, nodePort: {TARGET_UDP_NODE_PORT}, protocol: UDP}}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: target-1, namespace: bench, labels: {{kubernetes.io/service-name: target}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {POD_TCP_PORT}, protocol: TCP}}, {{name: dns, port: {POD_UDP_PORT}, protocol: UDP}}]\nendpoints:\n"
    );
    for i in 0..PODS {
        let _ = writeln!(
            out,
            "- addresses: [{}]\n  conditions: {{ready: true}}",
            pod_addr(i)
        );
    }
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: empty, namespace: bench}}\n\
         spec:\n  type: NodePort\n  clusterIP: {EMPTY_CLUSTER_IP}\n  ports:\n\
         \x20 - {{name: http, port: 80, nodePort: {EMPTY_NODE_PORT}, protocol: TCP}}\n"
    );
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: remote, namespace: bench}}\n\
         spec:\n  type: NodePort\n  clusterIP: {REMOTE_CLUSTER_IP}\n  ports:\n\
         \x20 - {{name: http, port: 80, targetPort: {POD_TCP_PORT}, nodePort: {REMOTE_NODE_PORT}, protocol: TCP}}\n\
         \x20 - {{name: dns, port: 53, targetPort: {POD_UDP_PORT}, nodePort: {REMOTE_UDP_NODE_PORT}, protocol: UDP}}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: remote-1, namespace: bench, labels: {{kubernetes.io/service-name: remote}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {POD_TCP_PORT}, protocol: TCP}}, {{name: dns, port: {POD_UDP_PORT}, protocol: UDP}}]\nendpoints:\n"
    );
    for i in 0..REMOTE_PODS {
        let _ = writeln!(
            out,
            "- addresses: [{}]\n  conditions: {{ready: true}}\n  nodeName: node-b",
            remote_pod_addr(i)
        );
    }
    for (i, filler) in filler_services(services.saturating_sub(1), filler_endpoints(services))
        .iter()
        .enumerate()
    {
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: filler-{i}, namespace: bench}}\n\
             spec:\n  clusterIP: {}\n  ports: [{{name: http, port: {}, targetPort: 8080, protocol: TCP}}]\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: filler-{i}-1, namespace: bench, labels: {{kubernetes.io/service-name: filler-{i}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n",
            filler.cluster_ip, filler.port
        );
        for (addr, _) in &filler.endpoints {
            let _ = writeln!(out, "- addresses: [{addr}]\n  conditions: {{ready: true}}");
        }
    }
    out
}

/// Whether `path` exists (for sections that need a binary).
pub fn require(path: &Path) -> Result<()> {
    if !path.exists() {
        bail!(
            "{} is missing: run `cargo xtask bench` (it builds the release binaries)",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use lb::{
        desired,
        model::{DesiredState, NodeFacts},
        source::{Snapshot, manifests::parse_documents},
    };

    use super::*;

    /// The manifests as the agent on the testbed's node reads them (its
    /// default rules, nothing programmed yet); a manifest problem fails.
    pub(crate) fn desired_of(text: &str) -> (Snapshot, DesiredState) {
        let set = parse_documents("services.yaml", text);
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        let node = NodeFacts {
            name: xtask::testbed::NODE_NAME.into(),
            addresses: vec![xtask::testbed::NODE_ADDR.into()],
            zone: None,
        };
        let state = desired::compute(
            &set.services,
            &set.slices,
            &node,
            &desired::Rules::default(),
            &desired::Holders::default(),
        );
        (set, state)
    }

    /// The manifests parse without problems and give the frontends the
    /// fixture waits for.
    #[test]
    fn manifests_give_the_expected_frontends() {
        for services in [1, 2, 50] {
            let (_, state) = desired_of(&manifests_text(services));
            assert!(state.problems.is_empty(), "{:?}", state.problems);
            assert_eq!(state.frontends.len(), expected_frontends(services));
        }
    }

    #[test]
    fn fillers_fit_the_backend_map() {
        assert_eq!(filler_endpoints(1000), 10);
        let at_10k = filler_endpoints(10_000);
        assert!(at_10k * 9_999 <= lb_common::DEFAULT_MAX_BACKENDS as usize);
        assert_eq!(service_shapes(1000).len(), 1000);
        assert_eq!(service_shapes(1000)[999].name, "bench/target:http");
    }
}
