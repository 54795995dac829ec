//! The loaded datapath: the embedded object loaded over its (pinned) maps,
//! with its programs verified. Attaching ([`super::attach`]), test runs
//! ([`super::test_run`]) and cleanup ([`super::cleanup`]) are methods of
//! the same [`Datapath`], each in its own module.
//!
//! The agent loads with [`Datapath::load`]: maps pinned in its pin
//! directory ([`super::pins`]) are reused, so established connections
//! survive a restart. Operator commands (`lb trace`) load the same object
//! again over the pinned maps with [`Datapath::load_existing`]: nothing is
//! created, pinned or attached, and in dry-run mode the programs change no
//! shared state.

use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    maps::{Array, Map, MapData},
    programs::{SchedClassifier, Xdp},
};
use lb_common::{ALL_MAPS, CT4, MAGLEV, TRACE, TRACE_REQUEST, TraceRecord, TraceRequest};

pub use super::program_load::{ProgramLoadTime, log_fields as program_load_log_fields};
pub use super::{
    attach::{Attached, XdpAttachMode},
    object::{
        CGROUP_PROGRAMS, LoadOptions, PROG_CONNECT4, PROG_GETPEERNAME4, PROG_RECVMSG4,
        PROG_SENDMSG4, PROG_TC_EGRESS, PROG_TRACE_SOCKET, PROG_XDP_INGRESS,
    },
    pins::{DEFAULT_PIN_DIR, LINKS_DIR},
};
use super::{
    kernel::KernelMaps,
    object::{self, MapSizes, Switches},
    pins::{self, PrivateMapDir},
};

/// The loaded datapath: programs (loaded, verified) and maps.
pub struct Datapath {
    pub(super) ebpf: Ebpf,
    pub(super) pin_dir: Option<PathBuf>,
    /// Loaded by [`Datapath::load_existing`]: for inspection only, attaching
    /// is refused.
    pub(super) inspect_only: bool,
    /// How long each program took to load ([`Datapath::load`] only).
    pub(super) program_load: Vec<ProgramLoadTime>,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("pin_dir", &self.pin_dir)
            .finish_non_exhaustive()
    }
}

impl Datapath {
    /// Loads the maps (reusing pinned ones) and every program (running the
    /// verifier), without attaching anything.
    pub fn load(opts: &LoadOptions) -> Result<Datapath> {
        let object = object::embedded()?;
        let sizes = MapSizes::for_options(opts)?;
        let switches = Switches {
            dry_run: false,
            bpf_log: opts.bpf_log,
        };
        // Maps are declared pinned-by-name, so the loader always pins them;
        // an unpinned datapath uses a private directory removed right after
        // loading.
        let mut ebpf = match &opts.pin_dir {
            Some(dir) => {
                pins::prepare_pin_dir(dir)?;
                super::counters_upgrade::release_outgrown_counters(dir)?;
                object::load_object(object, dir, dir, sizes, switches)?
            }
            None => {
                let private = PrivateMapDir::create()?;
                let dir = private.path();
                object::load_object(object, dir, dir, sizes, switches)?
            }
        };
        let program_load = super::program_load::load_attachable_programs(&mut ebpf)?;
        Ok(Datapath {
            ebpf,
            pin_dir: opts.pin_dir.clone(),
            inspect_only: false,
            program_load,
        })
    }

    /// Loads the object again over the maps an agent pinned in `pin_dir`,
    /// for operator commands. The maps must all exist (a clear error
    /// otherwise, and for maps of another layout version): nothing is
    /// created or pinned in `pin_dir`, and attaching the result is refused.
    /// Only the programs `lb trace` runs are loaded: `lb_xdp_ingress` and
    /// `lb_trace_socket`.
    ///
    /// With `dry_run` the programs change no shared state under
    /// `BPF_PROG_TEST_RUN` (no connection entry, no counter) and record
    /// their decisions in the datapath's own, unpinned `lb_trace` map.
    /// Without it, a test run acts on the live maps like traffic would.
    pub fn load_existing(pin_dir: &Path, dry_run: bool) -> Result<Datapath> {
        let object = object::embedded()?;
        super::kernel::check_layout_version(pin_dir)?;
        // Hold every pinned map open first, so what is loaded is what was
        // checked even if the agent cleans up meanwhile.
        let pinned = pins::open_pinned_maps(pin_dir)?;
        let entries = |name: &str| -> Result<u32> {
            let (_, map) = pinned
                .iter()
                .find(|(n, _)| *n == name)
                .context("map list")?;
            Ok(map
                .info()
                .with_context(|| format!("reading {name}"))?
                .max_entries())
        };
        let sizes = MapSizes {
            maglev_entries: entries(MAGLEV)?,
            ct_entries: entries(CT4)?,
            frag_entries: entries(lb_common::frag::FRAGS4)?,
            sock_revnat_entries: entries(lb_common::SOCK_REVNAT4)?,
            affinity_entries: entries(lb_common::AFFINITY4)?,
            backends: super::backend_capacity::BackendSizes {
                backends: entries(lb_common::BACKENDS4)?,
                connections: entries(lb_common::algorithm::BACKEND_CONNECTIONS)?,
            },
        };
        // The loader reuses maps pinned by name in the directory it is given:
        // give it a private one holding pins of exactly the maps opened
        // above, so it can never create (or pin) one in `pin_dir`.
        let private = PrivateMapDir::create()?;
        for (name, map) in &pinned {
            map.pin(private.path().join(name))
                .with_context(|| format!("re-pinning {name} privately"))?;
        }
        let switches = Switches {
            dry_run,
            bpf_log: false,
        };
        let mut ebpf = object::load_object(object, private.path(), pin_dir, sizes, switches)?;
        drop(private);
        object::load_trace_programs(&mut ebpf)?;
        Ok(Datapath {
            ebpf,
            pin_dir: Some(pin_dir.to_path_buf()),
            inspect_only: true,
            program_load: Vec::new(),
        })
    }

    /// How long the kernel took to load (verify) each program the agent
    /// attaches, `lb_xdp_ingress` first (empty for [`Self::load_existing`]).
    pub fn program_load_times(&self) -> &[ProgramLoadTime] {
        &self.program_load
    }

    /// The pin directory, when the datapath is pinned.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    /// Typed access to the maps (new file descriptors: independent of this
    /// `Datapath`'s lifetime).
    pub fn maps(&self) -> Result<KernelMaps> {
        let mut data = Vec::with_capacity(ALL_MAPS.len());
        for name in ALL_MAPS {
            let map = self
                .ebpf
                .map(name)
                .with_context(|| format!("map {name} missing from the datapath object"))?;
            let map_data = match map {
                Map::HashMap(d)
                | Map::LruHashMap(d)
                | Map::Array(d)
                | Map::ArrayOfMaps(d)
                | Map::PerCpuArray(d)
                | Map::LpmTrie(d) => d,
                _ => bail!("map {name} has an unexpected type"),
            };
            data.push(reopen(map_data, name)?);
        }
        let maps: [MapData; ALL_MAPS.len()] =
            data.try_into().map_err(|_| anyhow!("map count mismatch"))?;
        let maps = KernelMaps::from_map_data(maps)?;
        // fast path: pins an agent without the recheck generation wrote
        // (a rollback, then this version again) may have changed backends
        // unannounced: every flow rechecks at its next packet.
        maps.recheck_every_flow();
        Ok(match &self.pin_dir {
            Some(dir) => maps.with_tables_dir(super::kernel::tables_dir(dir)),
            None => maps,
        })
    }

    /// Starts reading the programs' aya-log records (loaded with
    /// `bpf_log`) into `logger`; the caller flushes it when it is readable.
    pub fn logger<T: log::Log>(&mut self, logger: T) -> Result<aya_log::EbpfLogger<T>> {
        aya_log::EbpfLogger::init_with_logger(&mut self.ebpf, logger)
            .context("reading the datapath's log records (was it loaded with bpf_log?)")
    }

    /// The XDP program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn xdp_program(&self) -> Result<&Xdp> {
        self.program(PROG_XDP_INGRESS)
    }

    /// The socket-decision trace program (loaded by
    /// [`Self::load_existing`] only).
    pub fn trace_socket_program(&self) -> Result<&Xdp> {
        self.program(PROG_TRACE_SOCKET)
    }

    /// The tc egress program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn tc_egress_program(&self) -> Result<&SchedClassifier> {
        self.program(PROG_TC_EGRESS)
    }

    /// The pod hook (tcx ingress on pod-facing devices).
    pub fn tc_pod_ingress_program(&self) -> Result<&SchedClassifier> {
        self.program(crate::datapath::object::PROG_TC_POD_INGRESS)
    }

    fn program<'a, T>(&'a self, name: &str) -> Result<&'a T>
    where
        &'a T: TryFrom<&'a aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        Ok(self
            .ebpf
            .program(name)
            .with_context(|| format!("program {name} missing from the datapath object"))?
            .try_into()?)
    }

    /// What the last dry run recorded (`lb_trace[0]`). A datapath loaded
    /// normally never writes it: all zeroes.
    pub fn trace_record(&self) -> Result<TraceRecord> {
        self.trace_maps()?.0.get(&0, 0).context("reading lb_trace")
    }

    /// The datapath's own `lb_trace` and `lb_trace_req` maps (new file
    /// descriptors).
    pub(crate) fn trace_maps(
        &self,
    ) -> Result<(Array<MapData, TraceRecord>, Array<MapData, TraceRequest>)> {
        let open = |name: &str| -> Result<Map> {
            let Some(Map::Array(data)) = self.ebpf.map(name) else {
                bail!("map {name} missing from the datapath object");
            };
            Ok(Map::Array(reopen(data, name)?))
        };
        Ok((
            Array::try_from(open(TRACE)?)?,
            Array::try_from(open(TRACE_REQUEST)?)?,
        ))
    }
}

/// The same map through a new file descriptor.
fn reopen(map: &MapData, name: &str) -> Result<MapData> {
    let fd = map
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .with_context(|| format!("duplicating the file descriptor of map {name}"))?;
    MapData::from_fd(fd).with_context(|| format!("opening map {name}"))
}
