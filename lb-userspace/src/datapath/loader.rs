//! Loading the datapath, pinning its maps and links, and attaching it.
//!
//! Everything lives under one bpffs directory (`pin_dir`):
//!
//! ```text
//! <pin_dir>/lb_fe4_v1, lb_be4_v1, ...        maps, pinned by name (lb-common)
//! <pin_dir>/links/lb_xdp_ingress@eth0         XDP link
//! <pin_dir>/links/lb_tc_egress@eth0           tcx egress link
//! <pin_dir>/links/lb_connect4@cgroup-1234     cgroup sock_addr links (cgroup id)
//! ```
//!
//! A restarted (or upgraded) agent finds the pinned maps and reuses them, so
//! established connections survive, and finds the pinned links and swaps
//! its freshly loaded programs into them with `BPF_LINK_UPDATE`: an atomic
//! replacement, with no moment where no program is attached.
//!
//! Operator commands (`lb trace`) load the same object again over the pinned
//! maps with [`Datapath::load_existing`]: nothing is created, pinned or
//! attached, and in dry-run mode the programs change no shared state.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, Map, MapData, MapError},
    programs::{
        CgroupAttachMode, CgroupSockAddr, LinkOrder, ProgramError, SchedClassifier, TcAttach,
        TcAttachType, TestRunOptions, Xdp,
        cgroup_sock_addr::CgroupSockAddrLink,
        links::{FdLink, LinkError, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
    sys::SyscallError,
};
use lb_common::{
    ALL_MAPS, CT4, DEFAULT_CT_ENTRIES, DEFAULT_MAX_TABLES, MAGLEV, MAGLEV_TABLE_SIZE, TRACE,
    TRACE_REQUEST, TraceRecord, TraceRequest,
};

use super::kernel::KernelMaps;

/// The XDP program (north-south ingress).
pub const PROG_XDP_INGRESS: &str = "lb_xdp_ingress";
/// The tc (tcx) egress program (reply path).
pub const PROG_TC_EGRESS: &str = "lb_tc_egress";
/// The cgroup sock_addr programs (east-west).
pub const PROG_CONNECT4: &str = "lb_connect4";
pub const PROG_SENDMSG4: &str = "lb_sendmsg4";
pub const PROG_RECVMSG4: &str = "lb_recvmsg4";
pub const PROG_GETPEERNAME4: &str = "lb_getpeername4";
/// `lb trace` of the socket hooks' decision (XDP, never attached).
pub const PROG_TRACE_SOCKET: &str = "lb_trace_socket";
/// Every cgroup program, in attach order.
pub const CGROUP_PROGRAMS: [&str; 4] = [
    PROG_CONNECT4,
    PROG_SENDMSG4,
    PROG_RECVMSG4,
    PROG_GETPEERNAME4,
];

/// Where the agent pins by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/lb";
/// Subdirectory of the pin directory holding the pinned links.
pub const LINKS_DIR: &str = "links";

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The datapath object, built by `build.rs` for the bpf target.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

/// The object's load-time switch (`.rodata`): 1 makes every program a dry
/// run that changes no shared state and records its decisions in
/// `lb_trace`.
const GLOBAL_DRY_RUN: &str = "DRY_RUN";
const GLOBAL_DEBUG: &str = "DEBUG";

#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// bpffs directory where maps (by name) and links are pinned. Maps
    /// already pinned there are reused (same layout and size required).
    ///
    /// `None` loads a private, unpinned datapath: its maps live as long as
    /// this process holds them and its attachments end when the
    /// [`Datapath`] is dropped (tests, one-shot tools).
    pub pin_dir: Option<PathBuf>,
    /// Maglev tables the datapath can hold (sizes `lb_maglev_v1`).
    pub max_tables: u32,
    /// Connection-table entries (sizes `lb_ct4_v1`).
    pub ct_entries: u32,
    /// Log each verdict through aya-log (`lb agent --bpf-log`). Off, the
    /// log calls are pruned by the verifier: no cost on the hot path.
    pub bpf_log: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            pin_dir: None,
            max_tables: DEFAULT_MAX_TABLES,
            ct_entries: DEFAULT_CT_ENTRIES,
            bpf_log: false,
        }
    }
}

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpAttachMode {
    /// Native (driver) mode where the driver supports it, generic otherwise
    /// (the kernel's choice).
    #[default]
    Auto,
    /// Native (driver) mode only: fails on drivers without XDP support.
    Native,
    /// Generic (skb) mode: works on any device, slower.
    Generic,
}

/// `true` asks for generic mode (the agent's `--xdp-generic` flag).
impl From<bool> for XdpAttachMode {
    fn from(generic: bool) -> Self {
        if generic { Self::Generic } else { Self::Auto }
    }
}

impl From<XdpAttachMode> for aya::programs::XdpMode {
    fn from(mode: XdpAttachMode) -> Self {
        match mode {
            XdpAttachMode::Auto => Self::Default,
            XdpAttachMode::Native => Self::Driver,
            XdpAttachMode::Generic => Self::Skb,
        }
    }
}

/// How an attachment came about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// A new link (pinned when the datapath is pinned).
    New,
    /// An existing pinned link now runs the new program (atomic swap).
    Replaced,
}

/// The loaded datapath: programs (loaded, verified) and maps.
pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    /// Loaded by [`Datapath::load_existing`]: for inspection only, attaching
    /// is refused.
    inspect_only: bool,
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
        if opts.max_tables == 0 {
            bail!("max_tables must be at least 1");
        }
        let maglev_entries = opts
            .max_tables
            .checked_mul(MAGLEV_TABLE_SIZE)
            .with_context(|| {
                format!(
                    "max_tables {} is too large (at most {})",
                    opts.max_tables,
                    u32::MAX / MAGLEV_TABLE_SIZE
                )
            })?;
        if opts.ct_entries == 0 {
            bail!("ct_entries must be at least 1");
        }
        // Maps are declared pinned-by-name, so the loader always pins them;
        // an unpinned datapath uses a private directory removed right after
        // loading (the maps then live as long as our file descriptors).
        let (map_dir, ephemeral) = match &opts.pin_dir {
            Some(dir) => (dir.clone(), false),
            None => (ephemeral_dir(), true),
        };
        prepare_pin_dir(&map_dir)?;
        let loaded = load_object(
            &map_dir,
            maglev_entries,
            opts.ct_entries,
            false,
            opts.bpf_log,
        );
        if ephemeral {
            remove_map_pins(&map_dir);
            let _ = std::fs::remove_dir(&map_dir);
        }
        let mut ebpf = loaded.map_err(|err| load_error(err, &map_dir, opts))?;
        load_programs(&mut ebpf)?;
        Ok(Datapath {
            ebpf,
            pin_dir: opts.pin_dir.clone(),
            inspect_only: false,
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
        super::kernel::check_layout_version(pin_dir)?;
        // Hold every pinned map open first, so what is loaded is what was
        // checked even if the agent cleans up meanwhile.
        let mut pinned = Vec::with_capacity(ALL_MAPS.len());
        let mut missing = Vec::new();
        for name in ALL_MAPS {
            let path = pin_dir.join(name);
            match MapData::from_pin(&path) {
                Ok(map) => pinned.push((name, map)),
                Err(MapError::SyscallError(SyscallError { io_error, .. }))
                    if io_error.kind() == io::ErrorKind::NotFound =>
                {
                    missing.push(name);
                }
                Err(err) => {
                    return Err(err)
                        .with_context(|| format!("opening pinned map {}", path.display()));
                }
            }
        }
        if !missing.is_empty() {
            let detail = if pinned.is_empty() {
                String::new()
            } else {
                format!(" ({} missing there)", missing.join(", "))
            };
            bail!(
                "no lb datapath pinned at {}: is the agent running? (see `lb agent --pin-dir`){detail}",
                pin_dir.display()
            );
        }
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
        let (maglev_entries, ct_entries) = (entries(MAGLEV)?, entries(CT4)?);
        // The loader reuses maps pinned by name in the directory it is given:
        // give it a private one holding pins of exactly the maps opened
        // above, so it can never create (or pin) one in `pin_dir`.
        let map_dir = ephemeral_dir();
        prepare_pin_dir(&map_dir)?;
        let loaded = pinned
            .iter()
            .try_for_each(|(name, map)| {
                map.pin(map_dir.join(name))
                    .with_context(|| format!("re-pinning {name} privately"))
            })
            .and_then(|()| {
                load_object(&map_dir, maglev_entries, ct_entries, dry_run, false).map_err(|err| {
                    let opts = LoadOptions {
                        pin_dir: Some(pin_dir.to_path_buf()),
                        max_tables: maglev_entries / MAGLEV_TABLE_SIZE,
                        ct_entries,
                        bpf_log: false,
                    };
                    load_error(err, pin_dir, &opts)
                })
            });
        remove_map_pins(&map_dir);
        let _ = std::fs::remove_dir(&map_dir);
        let mut ebpf = loaded?;
        program_mut::<Xdp>(&mut ebpf, PROG_XDP_INGRESS)?
            .load()
            .with_context(|| format!("loading {PROG_XDP_INGRESS}"))?;
        program_mut::<Xdp>(&mut ebpf, PROG_TRACE_SOCKET)?
            .load()
            .with_context(|| format!("loading {PROG_TRACE_SOCKET}"))?;
        Ok(Datapath {
            ebpf,
            pin_dir: Some(pin_dir.to_path_buf()),
            inspect_only: true,
        })
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
                Map::HashMap(d) | Map::LruHashMap(d) | Map::Array(d) | Map::PerCpuArray(d) => d,
                _ => bail!("map {name} has an unexpected type"),
            };
            let fd = map_data
                .fd()
                .as_fd_owned()
                .with_context(|| format!("duplicating the file descriptor of map {name}"))?;
            data.push(MapData::from_fd(fd).with_context(|| format!("opening map {name}"))?);
        }
        let maps: [MapData; ALL_MAPS.len()] =
            data.try_into().map_err(|_| anyhow!("map count mismatch"))?;
        Ok(KernelMaps::from_map_data(maps)?)
    }

    /// Starts reading the programs' aya-log records (loaded with
    /// `bpf_log`) into `logger`; the caller flushes it when it is readable.
    pub fn logger<T: log::Log>(&mut self, logger: T) -> Result<aya_log::EbpfLogger<T>> {
        aya_log::EbpfLogger::init_with_logger(&mut self.ebpf, logger)
            .context("reading the datapath's log records (was it loaded with bpf_log?)")
    }

    /// The XDP program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn xdp_program(&self) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program(PROG_XDP_INGRESS)
            .context(PROG_XDP_INGRESS)?
            .try_into()?)
    }

    /// The socket-decision trace program (loaded by
    /// [`Self::load_existing`] only).
    pub fn trace_socket_program(&self) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program(PROG_TRACE_SOCKET)
            .context(PROG_TRACE_SOCKET)?
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
            let fd = data
                .fd()
                .as_fd_owned()
                .with_context(|| format!("duplicating the file descriptor of map {name}"))?;
            Ok(Map::Array(
                MapData::from_fd(fd).with_context(|| format!("opening map {name}"))?,
            ))
        };
        Ok((
            Array::try_from(open(TRACE)?)?,
            Array::try_from(open(TRACE_REQUEST)?)?,
        ))
    }

    /// Runs the socket-decision trace program once on `frame` (see
    /// [`Self::run_xdp`]).
    pub fn run_trace_socket(&self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        test_run(self.trace_socket_program()?, frame)
    }

    /// The tc egress program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn tc_egress_program(&self) -> Result<&SchedClassifier> {
        Ok(self
            .ebpf
            .program(PROG_TC_EGRESS)
            .context(PROG_TC_EGRESS)?
            .try_into()?)
    }

    /// Runs the XDP program once on `frame` (`BPF_PROG_TEST_RUN`; touches no
    /// interface, but does use and update the live maps). Returns the
    /// action and the frame as the program left it.
    pub fn run_xdp(&self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        test_run(self.xdp_program()?, frame)
    }

    /// Runs the tc egress program once on `frame` (see [`Self::run_xdp`]).
    /// Returns the tc verdict and the frame.
    pub fn run_tc_egress(&self, frame: &[u8]) -> Result<(i32, Vec<u8>)> {
        let (ret, out) = test_run(self.tc_egress_program()?, frame)?;
        Ok((ret as i32, out))
    }

    /// Attaches the XDP program to `iface`, or swaps it into the link pinned
    /// for `iface` by an earlier agent. A replaced link keeps its mode.
    pub fn attach_xdp(&mut self, iface: &str, mode: impl Into<XdpAttachMode>) -> Result<Attached> {
        self.check_attachable()?;
        let mode = mode.into();
        let pin = self.link_pin(PROG_XDP_INGRESS, iface)?;
        let name = iface_name(iface)?;
        let prog: &mut Xdp = program_mut(&mut self.ebpf, PROG_XDP_INGRESS)?;
        if replace_pinned(pin.as_deref(), "XDP", |link: XdpLink| {
            let id = prog.attach_to_link(link)?;
            prog.take_link(id)?;
            Ok(())
        })? {
            return Ok(Attached::Replaced);
        }
        let id = prog
            .attach(&name, mode.into())
            .with_context(|| format!("attaching XDP ({mode:?}) to {iface}"))?;
        if let Some(pin) = &pin {
            pin_new(prog.take_link(id)?, pin, "XDP")?;
        }
        Ok(Attached::New)
    }

    /// Attaches the tc program to `iface`'s egress (tcx, kernel 6.6+), or
    /// swaps it into the link pinned for `iface`.
    pub fn attach_tc_egress(&mut self, iface: &str) -> Result<Attached> {
        self.check_attachable()?;
        let pin = self.link_pin(PROG_TC_EGRESS, iface)?;
        let name = iface_name(iface)?;
        let prog: &mut SchedClassifier = program_mut(&mut self.ebpf, PROG_TC_EGRESS)?;
        if replace_pinned(pin.as_deref(), "tcx", |link: SchedClassifierLink| {
            let id = prog.attach_to_link(link)?;
            prog.take_link(id)?;
            Ok(())
        })? {
            return Ok(Attached::Replaced);
        }
        let egress = TcAttach::Tcx {
            attach_type: TcAttachType::Egress,
            order: LinkOrder::default(),
        };
        let id = prog
            .attach(&name, egress)
            .with_context(|| format!("attaching tcx egress to {iface}"))?;
        if let Some(pin) = &pin {
            pin_new(prog.take_link(id)?, pin, "tcx")?;
        }
        Ok(Attached::New)
    }

    /// Attaches the four socket programs to the cgroup v2 directory `cgroup`
    /// (never this machine's root cgroup in tests: it governs every
    /// connection on the machine), or swaps them into links pinned for it.
    pub fn attach_cgroup(&mut self, cgroup: &Path) -> Result<Attached> {
        self.check_attachable()?;
        let dir =
            File::open(cgroup).with_context(|| format!("opening cgroup {}", cgroup.display()))?;
        let id = dir
            .metadata()
            .with_context(|| format!("stat {}", cgroup.display()))?
            .ino();
        let target = format!("cgroup-{id}");
        let mut outcome = Attached::Replaced;
        for name in CGROUP_PROGRAMS {
            let pin = self.link_pin(name, &target)?;
            let prog: &mut CgroupSockAddr = program_mut(&mut self.ebpf, name)?;
            if replace_pinned(pin.as_deref(), "cgroup", |link: CgroupSockAddrLink| {
                let id = prog.attach_to_link(link)?;
                prog.take_link(id)?;
                Ok(())
            })? {
                continue;
            }
            let link_id = prog
                .attach(&dir, CgroupAttachMode::Single)
                .with_context(|| format!("attaching {name} to {}", cgroup.display()))?;
            if let Some(pin) = &pin {
                pin_new(prog.take_link(link_id)?, pin, "cgroup")?;
            }
            outcome = Attached::New;
        }
        Ok(outcome)
    }

    /// Detaches everything pinned under `pin_dir` and removes its pinned
    /// maps (`lb cleanup`): every translated connection loses its state.
    /// Links still held open by a running process stay attached until it
    /// closes them. Files that are not ours are left alone.
    pub fn detach_all(pin_dir: &Path) -> Result<()> {
        let links = pin_dir.join(LINKS_DIR);
        match std::fs::read_dir(&links) {
            Ok(entries) => {
                for entry in entries {
                    let path = entry?.path();
                    let is_ours = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.split_once('@').is_some_and(|(prog, _)| {
                            prog == PROG_XDP_INGRESS
                                || prog == PROG_TC_EGRESS
                                || CGROUP_PROGRAMS.contains(&prog)
                        })
                    });
                    if is_ours {
                        std::fs::remove_file(&path)
                            .with_context(|| format!("unpinning {}", path.display()))?;
                    }
                }
                remove_dir_if_empty(&links)?;
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("reading {}", links.display())),
        }
        for name in ALL_MAPS {
            let path = pin_dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(err).with_context(|| format!("unpinning {}", path.display()));
                }
            }
        }
        if pin_dir.exists() {
            remove_dir_if_empty(pin_dir)?;
        }
        Ok(())
    }

    /// Same as [`Self::detach_all`] (`lb cleanup`).
    pub fn remove_pins(pin_dir: &Path) -> Result<()> {
        Self::detach_all(pin_dir)
    }

    fn check_attachable(&self) -> Result<()> {
        if self.inspect_only {
            bail!(
                "this datapath was loaded for inspection over the agent's pinned maps: it is never attached"
            );
        }
        Ok(())
    }

    /// `<pin_dir>/links/<prog>@<target>`, with the links directory created;
    /// `None` for an unpinned datapath.
    fn link_pin(&self, prog: &str, target: &str) -> Result<Option<PathBuf>> {
        let Some(pin_dir) = &self.pin_dir else {
            return Ok(None);
        };
        if target.is_empty() || target.contains('/') {
            bail!("invalid attach target {target:?}");
        }
        let links = pin_dir.join(LINKS_DIR);
        std::fs::create_dir_all(&links).with_context(|| format!("creating {}", links.display()))?;
        Ok(Some(links.join(format!("{prog}@{}", pin_name(target)))))
    }
}

/// bpffs refuses names containing a dot (VLAN devices are `eth0.100`):
/// escape `%` and `.` the URL way.
fn pin_name(target: &str) -> String {
    target.replace('%', "%25").replace('.', "%2e")
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the datapath object"))?;
    Ok(prog.try_into()?)
}

fn load_programs(ebpf: &mut Ebpf) -> Result<()> {
    program_mut::<Xdp>(ebpf, PROG_XDP_INGRESS)?
        .load()
        .with_context(|| format!("loading {PROG_XDP_INGRESS}"))?;
    program_mut::<SchedClassifier>(ebpf, PROG_TC_EGRESS)?
        .load()
        .with_context(|| format!("loading {PROG_TC_EGRESS}"))?;
    for name in CGROUP_PROGRAMS {
        program_mut::<CgroupSockAddr>(ebpf, name)?
            .load()
            .with_context(|| format!("loading {name}"))?;
    }
    Ok(())
}

/// Loads the object's maps (pinned-by-name ones reused from, or created in,
/// `map_dir`) with the given sizes and the dry-run and debug-log switches;
/// programs are not loaded yet.
fn load_object(
    map_dir: &Path,
    maglev_entries: u32,
    ct_entries: u32,
    dry_run: bool,
    bpf_log: bool,
) -> Result<Ebpf, EbpfError> {
    EbpfLoader::new()
        .default_map_pin_directory(map_dir)
        .map_max_entries(MAGLEV, maglev_entries)
        .map_max_entries(CT4, ct_entries)
        .override_global(GLOBAL_DRY_RUN, &u8::from(dry_run), true)
        .override_global(GLOBAL_DEBUG, &u8::from(bpf_log), true)
        .load(OBJECT)
}

fn test_run<P>(prog: &P, frame: &[u8]) -> Result<(u32, Vec<u8>)>
where
    for<'a> P: aya::programs::TestRun<Opts<'a> = TestRunOptions<'a>, Result = aya::programs::TestRunResult>,
{
    // Room for anything the program might grow the frame by.
    let mut out = vec![0u8; frame.len() + 256];
    let result = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    out.truncate(result.data_size_out as usize);
    Ok((result.return_value, out))
}

/// Turns the loader's error into one an operator can act on.
fn load_error(err: EbpfError, dir: &Path, opts: &LoadOptions) -> anyhow::Error {
    if let EbpfError::MapError(MapError::IncompatiblePinnedMap {
        name,
        property,
        expected,
        actual,
    }) = &err
    {
        let hint = if name == MAGLEV && *property == "max_entries" {
            format!(
                "it holds {} Maglev tables ({actual} entries) and {} were asked for ({expected} entries): \
                 start with max_tables {}",
                actual / u64::from(MAGLEV_TABLE_SIZE),
                opts.max_tables,
                actual / u64::from(MAGLEV_TABLE_SIZE),
            )
        } else if name == CT4 && *property == "max_entries" {
            format!(
                "it holds {actual} connection entries and {expected} were asked for: start with ct_entries {actual}"
            )
        } else {
            format!(
                "its {property} is {actual}, this datapath needs {expected} (a layout change needs a migration)"
            )
        };
        return anyhow!(
            "pinned map {} does not fit this datapath: {hint}, or remove the pinned datapath with `lb cleanup --pin-dir {}` \
             (drops every established connection)",
            dir.join(name).display(),
            dir.display(),
        );
    }
    anyhow::Error::new(err).context(format!(
        "loading the datapath (maps pinned in {})",
        dir.display()
    ))
}

/// Makes sure `dir` exists on a bpf filesystem.
fn prepare_pin_dir(dir: &Path) -> Result<()> {
    // The nearest existing ancestor tells whether bpffs is mounted there
    // (if it is not, /sys/fs/bpf is a read-only sysfs directory).
    let mut existing = dir;
    while !existing.exists() {
        existing = existing
            .parent()
            .context("pin directory has no existing ancestor")?;
    }
    if !is_bpffs(existing)? {
        bail!(
            "{} is not on a bpf filesystem (bpffs is not mounted there): run `mount -t bpf bpf /sys/fs/bpf`",
            existing.display()
        );
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating pin directory {}", dir.display()))?;
    Ok(())
}

fn is_bpffs(path: &Path) -> Result<bool> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).context("path contains NUL")?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed out-parameter.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("statfs {}", path.display()));
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

fn ephemeral_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    // bpffs refuses names with a dot.
    PathBuf::from(format!(
        "/sys/fs/bpf/lb-unpinned-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

fn remove_map_pins(dir: &Path) {
    for name in ALL_MAPS {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

fn remove_dir_if_empty(dir: &Path) -> Result<()> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(err)
            if err.kind() == io::ErrorKind::DirectoryNotEmpty
                || err.kind() == io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        Err(err) => Err(err).with_context(|| format!("removing {}", dir.display())),
    }
}

fn iface_name(iface: &str) -> Result<CString> {
    CString::new(iface).with_context(|| format!("invalid interface name {iface:?}"))
}

/// Opens the link pinned at `pin`, if there is one.
fn open_pinned_link(pin: &Path) -> Result<Option<FdLink>> {
    if !pin.exists() {
        return Ok(None);
    }
    let link = PinnedLink::from_pin(pin)
        .with_context(|| format!("opening pinned link {}", pin.display()))?;
    // Converting keeps the pin: only our file descriptor goes with the value.
    Ok(Some(FdLink::from(link)))
}

/// Swaps a program into the link pinned at `pin`, if there is one, with
/// an atomic `BPF_LINK_UPDATE` (`swap`): no moment without a program.
/// `Ok(true)`: replaced. `Ok(false)`: nothing pinned, or the pin was
/// defunct and is removed; the caller attaches anew.
fn replace_pinned<L>(
    pin: Option<&Path>,
    kind: &str,
    swap: impl FnOnce(L) -> Result<()>,
) -> Result<bool>
where
    L: TryFrom<FdLink, Error = LinkError>,
{
    let Some(pin) = pin else { return Ok(false) };
    let Some(link) = open_pinned_link(pin)? else {
        return Ok(false);
    };
    match L::try_from(link)
        .with_context(|| format!("the pinned link is not a {kind} link"))
        .and_then(swap)
    {
        Ok(()) => Ok(true),
        Err(err) if is_defunct(&err) => {
            remove_stale_pin(pin)?;
            Ok(false)
        }
        Err(err) => Err(err.context(format!("replacing the program of {}", pin.display()))),
    }
}

/// Pins a link just attached.
fn pin_new<L>(link: L, pin: &Path, kind: &str) -> Result<()>
where
    L: TryInto<FdLink, Error = LinkError>,
{
    let link: FdLink = link.try_into().with_context(|| {
        format!("the kernel attached {kind} without a bpf_link (netlink); cannot pin it")
    })?;
    pin_link(link, pin)
}

fn pin_link(link: FdLink, pin: &Path) -> Result<()> {
    // Dropping the returned PinnedLink closes our descriptor; the pin keeps
    // the attachment alive.
    link.pin(pin)
        .with_context(|| format!("pinning link {}", pin.display()))?;
    Ok(())
}

/// A pinned link whose target went away (device deleted, cgroup removed):
/// `BPF_LINK_UPDATE` answers `ENOLINK`.
fn is_defunct(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let io = if let Some(io_error) = cause.downcast_ref::<io::Error>() {
            Some(io_error)
        } else if let Some(SyscallError { io_error, .. }) = cause.downcast_ref() {
            Some(io_error)
        } else if let Some(ProgramError::SyscallError(SyscallError { io_error, .. })) =
            cause.downcast_ref()
        {
            Some(io_error)
        } else if let Some(LinkError::SyscallError(SyscallError { io_error, .. })) =
            cause.downcast_ref()
        {
            Some(io_error)
        } else {
            None
        };
        io.and_then(io::Error::raw_os_error) == Some(libc::ENOLINK)
    })
}

fn remove_stale_pin(pin: &Path) -> Result<()> {
    tracing::warn!(pin = %pin.display(), "pinned link is defunct (its target is gone); attaching anew");
    std::fs::remove_file(pin).with_context(|| format!("removing stale link {}", pin.display()))
}

trait AsFdOwned {
    fn as_fd_owned(&self) -> io::Result<std::os::fd::OwnedFd>;
}

impl<T: std::os::fd::AsFd> AsFdOwned for T {
    fn as_fd_owned(&self) -> io::Result<std::os::fd::OwnedFd> {
        self.as_fd().try_clone_to_owned()
    }
}
