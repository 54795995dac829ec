//! Bringing the datapath up: load (or adopt the pinned one), attach to the
//! devices and the cgroup, and forward its debug log.

use anyhow::{Context, Result};
use tracing::{info, warn};

use super::AgentConfig;
use crate::datapath::loader::{Datapath, LoadOptions};

/// Raises the soft limit of open files to the hard one: the writer swaps
/// Maglev tables into the outer map as many at a time as it may hold
/// their descriptors open (one RCU wait per swap), and a container's soft
/// limit (often 1,024) would make a full sync of 10,000 tables wait 40
/// times. What the limit cannot give is no error: the swaps get smaller.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                warn!(
                    "cannot raise the open-file limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

/// Loads the datapath and attaches it where the config says; returns it
/// and the external devices it attached to.
pub(super) fn start(config: &AgentConfig) -> Result<(Datapath, Vec<String>)> {
    raise_open_file_limit();
    let mut datapath = Datapath::load(&LoadOptions {
        pin_dir: Some(config.pin_dir.clone()),
        max_tables: config.max_tables,
        ct_entries: config.ct_entries,
        bpf_log: config.bpf_log,
        frag_entries: config.frag_entries,
        max_backends: config.max_backends,
        sock_revnat_entries: config.sock_revnat_entries,
        affinity_entries: config.affinity_entries,
    })
    .context("loading the datapath")?;
    info!(
        "programs verified {}",
        crate::datapath::loader::program_load_log_fields(datapath.program_load_times())
    );
    if config.bpf_log {
        forward_bpf_logs(&mut datapath)?;
    }
    // Before any device sees traffic: every new flow selects with it.
    datapath
        .maps()
        .context("opening the datapath maps")?
        .set_hash_seed(config.hash_seed)
        .context("writing the flow hash's seed (--hash-seed)")?;
    // selection: before the new programs run, the tables of lb_maglev_v1.
    if let Some(tables) = datapath
        .maps()?
        .carry_over_maglev_v1(&config.pin_dir)
        .context("carrying the Maglev tables over from lb_maglev_v1")?
    {
        info!(tables, "Maglev tables carried over from lb_maglev_v1");
    }
    let devices = super::devices::resolve(&config.devices)?;
    for device in &devices {
        let xdp = datapath
            .attach_xdp(device, config.xdp_generic)
            .with_context(|| format!("attaching XDP to {device}"))?;
        let tc = datapath
            .attach_tc_egress(device)
            .with_context(|| format!("attaching tc egress to {device}"))?;
        info!(device, xdp = ?xdp, tc_egress = ?tc, "attached to device");
        if let Err(err) = super::snat_sysctl::accept_local(device) {
            tracing::warn!(device, "accept_local not set: {err}");
        }
    }
    for device in config.named_pod_devices() {
        let hook = datapath
            .attach_tc_pod_ingress(device)
            .with_context(|| format!("attaching the pod hook to {device} (--pod-device)"))?;
        info!(device, tc_ingress = ?hook, "attached to pod device");
        if let Err(err) = super::snat_sysctl::accept_local(device) {
            tracing::warn!(device, "accept_local not set: {err}");
        }
    }
    // After the programs were replaced: nothing writes the old table now.
    let mut maps = datapath.maps().context("opening the datapath maps")?;
    if let Some(moved) = crate::datapath::ct_migrate::migrate_v1(&config.pin_dir, &mut maps)
        .context("carrying the connection table over from lb_ct4_v1")?
    {
        info!(
            entries = moved,
            "connection table carried over from lb_ct4_v1"
        );
    }
    if let Some(moved) = crate::datapath::ct_migrate_v2::migrate_v2(&config.pin_dir, &mut maps)
        .context("carrying the connection table over from lb_ct4_v2 and lb_ct4_new_v2")?
    {
        info!(
            entries = moved,
            "connection table carried over from lb_ct4_v2 and lb_ct4_new_v2"
        );
    }
    // Local backends are masqueraded only where the hook that translates
    // their replies back is attached; under `auto`, from the first sync on,
    // once every local endpoint's device has it (`pod_devices`).
    let named = config.named_pod_devices().next().is_some();
    maps.set_masquerade_local_backends(named && !config.pod_devices_auto())
        .context("writing whether local backends are masqueraded (--pod-device)")?;
    // After the programs are attached: a device forwards in XDP only where
    // lb's XDP runs (a driver may take redirected frames only there).
    let forward = if config.xdp_forward {
        forward_devices(&devices)?
    } else {
        Default::default()
    };
    maps.set_forward_devices(&forward)
        .context("writing the devices that forward in XDP (--xdp-forward)")?;
    if !config.xdp_forward {
        // `xdp_targets` keeps them under the flag; without it, none is left.
        maps.set_xdp_targets(&Default::default())
            .context("clearing the devices taking redirected frames (--xdp-forward off)")?;
    }
    if config.xdp_forward {
        info!(devices = ?devices, "forwarding in XDP by these devices");
    }
    maps.set_masquerade_rules(&config.masquerade.rules())
        .context("writing the masquerade rules (--cluster-cidr, --masquerade-all)")?;
    info!(
        cluster_cidr = ?config.masquerade.cluster_cidr.map(|c| c.to_string()),
        masquerade_all = config.masquerade.masquerade_all,
        "masquerade rules for ClusterIP traffic"
    );
    if let Some(cgroup) = &config.cgroup {
        let hooks = datapath
            .attach_cgroup(cgroup)
            .with_context(|| format!("attaching socket hooks to {}", cgroup.display()))?;
        info!(cgroup = %cgroup.display(), socket_hooks = ?hooks, "attached to cgroup");
    }
    Ok((datapath, devices))
}

/// The ifindexes of `devices`.
pub(super) fn forward_devices(devices: &[String]) -> Result<std::collections::BTreeSet<u32>> {
    devices
        .iter()
        .map(|device| {
            nix::net::if_::if_nametoindex(device.as_str())
                .with_context(|| format!("finding the ifindex of {device} (--xdp-forward)"))
        })
        .collect()
}

/// Forwards the datapath's aya-log records into the agent's log (they reach
/// tracing through its `log` bridge) as they arrive.
fn forward_bpf_logs(datapath: &mut Datapath) -> Result<()> {
    let logger = datapath.logger(log::logger())?;
    // SAFETY: the logger owns its map fd and flushing neither closes nor
    // replaces it, as tokio's AsyncFd requires.
    let mut logger = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    }?;
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = logger.readable_mut().await else {
                break;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
    warn!("datapath debug logging is on: every packet is logged, which costs throughput");
    Ok(())
}
