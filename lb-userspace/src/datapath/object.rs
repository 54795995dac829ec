//! The embedded datapath object: its programs, the options it is loaded
//! with (map sizes, the load-time globals `DRY_RUN` and `DEBUG`), and the
//! errors of loading it, worded so an operator can act on them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::MapError,
    programs::{ProgramError, Xdp},
};
use lb_common::frag::{DEFAULT_FRAG_ENTRIES, FRAGS4};
use lb_common::{
    BACKENDS4, CT4, CT4_NEW, DEFAULT_AFFINITY_ENTRIES, DEFAULT_CT_ENTRIES, DEFAULT_MAX_TABLES,
    DEFAULT_SOCK_REVNAT_ENTRIES, MAGLEV, SOCK_REVNAT4,
};

use super::backend_capacity::{self, BackendSizes};

/// The most table ids `--max-tables` may ask for (the outer map holds one
/// 8-byte reference per id, allocated at load).
pub const MAX_TABLE_IDS: u32 = 1 << 20;

/// The XDP program (north-south ingress).
pub const PROG_XDP_INGRESS: &str = "lb_xdp_ingress";
/// The tc (tcx) egress program (reply path).
pub const PROG_TC_EGRESS: &str = "lb_tc_egress";
/// tcx ingress on pod-facing devices: local pods' masqueraded replies.
pub const PROG_TC_POD_INGRESS: &str = "lb_tc_pod_ingress";
/// The cgroup sock_addr programs (east-west).
pub const PROG_CONNECT4: &str = "lb_connect4";
pub const PROG_SENDMSG4: &str = "lb_sendmsg4";
pub const PROG_RECVMSG4: &str = "lb_recvmsg4";
pub const PROG_GETPEERNAME4: &str = "lb_getpeername4";
/// The cgroup skb egress program: source ranges of sockets translated
/// before their source was known.
pub const PROG_SOCK_EGRESS: &str = "lb_sock_egress";
/// `lb trace` of the socket hooks' decision (XDP, never attached).
pub const PROG_TRACE_SOCKET: &str = "lb_trace_socket";
/// Every cgroup program, in attach order.
pub const CGROUP_PROGRAMS: [&str; 4] = [
    PROG_CONNECT4,
    PROG_SENDMSG4,
    PROG_RECVMSG4,
    PROG_GETPEERNAME4,
];

/// The datapath object, built by `build.rs` for the bpf target (empty when
/// bpf-linker was missing at build time).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

/// The object's load-time switch (`.rodata`): 1 makes every program a dry
/// run that changes no shared state and records its decisions in
/// `lb_trace`.
const GLOBAL_DRY_RUN: &str = "DRY_RUN";
/// 1 keeps the programs' aya-log calls (`lb agent --bpf-log`).
const GLOBAL_DEBUG: &str = "DEBUG";

#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// bpffs directory where maps (by name) and links are pinned. Maps
    /// already pinned there are reused (same layout and size required).
    ///
    /// `None` loads a private, unpinned datapath: its maps live as long as
    /// this process holds them and its attachments end when the
    /// [`Datapath`](super::Datapath) is dropped (tests, one-shot tools).
    pub pin_dir: Option<PathBuf>,
    /// Maglev tables the datapath can hold (sizes `lb_maglev_v1`).
    pub max_tables: u32,
    /// Connection-table entries (sizes `lb_ct4_v1`).
    pub ct_entries: u32,
    /// Log each verdict through aya-log (`lb agent --bpf-log`). Off, the
    /// log calls are pruned by the verifier: no cost on the hot path.
    pub bpf_log: bool,
    /// Fragmented datagrams remembered at once (sizes `lb_frag4_v1`).
    pub frag_entries: u32,
    /// Backends the datapath holds (`--max-backends`; `None`: the pinned
    /// maps' size, else `DEFAULT_MAX_BACKENDS`): see `backend_capacity`.
    pub max_backends: Option<u32>,
    /// Socket translations remembered at once (sizes `lb_sock_rnat4_v1`).
    pub sock_revnat_entries: u32,
    /// Session-affinity clients remembered at once (sizes `lb_affinity4_v1`).
    pub affinity_entries: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            pin_dir: None,
            max_tables: DEFAULT_MAX_TABLES,
            ct_entries: DEFAULT_CT_ENTRIES,
            bpf_log: false,
            frag_entries: DEFAULT_FRAG_ENTRIES,
            max_backends: None,
            sock_revnat_entries: DEFAULT_SOCK_REVNAT_ENTRIES,
            affinity_entries: DEFAULT_AFFINITY_ENTRIES,
        }
    }
}

/// Why the datapath could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "lb was built without its datapath (bpf-linker was missing): run `cargo xtask setup` and rebuild"
    )]
    EmptyObject,
    #[error("max_tables must be at least 1")]
    NoTables,
    #[error("max_tables {asked} is too large (at most {max})")]
    TooManyTables { asked: u32, max: u32 },
    #[error("ct_entries must be at least 1")]
    NoConnectionEntries,
    #[error("--frag-entries must be at least 1")]
    NoFragmentEntries,
    #[error("--max-backends must be at least 1")]
    NoBackends,
    #[error("--sock-revnat-entries must be at least 1")]
    NoSocketTranslationEntries,
    #[error("--affinity-entries must be at least 1")]
    NoAffinityEntries,
    #[error("--max-backends {asked} is too large (at most {max})")]
    TooManyBackends { asked: u32, max: u32 },
    #[error(
        "the datapath pinned in {} holds {pinned} backends and --max-backends {asked} was asked for: \
         start without --max-backends (or with --max-backends {pinned}) to keep it, or remove the pinned \
         datapath with `lb cleanup --pin-dir {}` (drops every established connection) to resize it",
        dir.display(),
        dir.display()
    )]
    BackendsResized {
        dir: PathBuf,
        pinned: u32,
        asked: u32,
    },
    #[error(
        "pinned map {} does not fit this datapath: {hint}, or remove the pinned datapath with `lb cleanup --pin-dir {}` \
         (drops every established connection)",
        dir.join(name).display(),
        dir.display()
    )]
    IncompatiblePinnedMap {
        dir: PathBuf,
        name: String,
        hint: String,
    },
    #[error("loading the datapath (maps pinned in {})", dir.display())]
    Object {
        dir: PathBuf,
        #[source]
        source: Box<EbpfError>,
    },
}

/// The embedded object, refused when the build left it empty.
pub(super) fn embedded() -> Result<&'static [u8], LoadError> {
    non_empty(OBJECT)
}

fn non_empty(object: &'static [u8]) -> Result<&'static [u8], LoadError> {
    if object.is_empty() {
        return Err(LoadError::EmptyObject);
    }
    Ok(object)
}

/// The sizes of the maps whose size is chosen at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct MapSizes {
    pub maglev_entries: u32,
    pub ct_entries: u32,
    pub frag_entries: u32,
    pub backends: BackendSizes,
    pub sock_revnat_entries: u32,
    pub affinity_entries: u32,
}

impl MapSizes {
    pub fn for_options(opts: &LoadOptions) -> Result<Self, LoadError> {
        if opts.max_tables == 0 {
            return Err(LoadError::NoTables);
        }
        // One outer entry per table: the tables themselves are inner maps
        // of their own sizes, allocated as they are written.
        if opts.max_tables > MAX_TABLE_IDS {
            return Err(LoadError::TooManyTables {
                asked: opts.max_tables,
                max: MAX_TABLE_IDS,
            });
        }
        let maglev_entries = opts.max_tables;
        if opts.ct_entries == 0 {
            return Err(LoadError::NoConnectionEntries);
        }
        if opts.frag_entries == 0 {
            return Err(LoadError::NoFragmentEntries);
        }
        if opts.sock_revnat_entries == 0 {
            return Err(LoadError::NoSocketTranslationEntries);
        }
        if opts.affinity_entries == 0 {
            return Err(LoadError::NoAffinityEntries);
        }
        let backends = backend_capacity::resolve(opts.pin_dir.as_deref(), opts.max_backends)?;
        Ok(Self {
            maglev_entries,
            ct_entries: opts.ct_entries,
            frag_entries: opts.frag_entries,
            backends,
            sock_revnat_entries: opts.sock_revnat_entries,
            affinity_entries: opts.affinity_entries,
        })
    }
}

/// The load-time globals.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Switches {
    pub dry_run: bool,
    pub bpf_log: bool,
}

/// Loads the object's maps (pinned-by-name ones reused from, or created in,
/// `map_dir`) with the given sizes and switches; programs are not loaded
/// yet. `pin_dir` names the directory in errors (the one the operator
/// knows, which `map_dir` is a private copy of for inspection).
pub(super) fn load_object(
    object: &[u8],
    map_dir: &Path,
    pin_dir: &Path,
    sizes: MapSizes,
    switches: Switches,
) -> Result<Ebpf, LoadError> {
    EbpfLoader::new()
        .default_map_pin_directory(map_dir)
        .map_max_entries(MAGLEV, sizes.maglev_entries)
        .map_max_entries(CT4, sizes.ct_entries)
        .map_max_entries(CT4_NEW, lb_common::ct::new_table_entries(sizes.ct_entries))
        .map_max_entries(FRAGS4, sizes.frag_entries)
        .map_max_entries(SOCK_REVNAT4, sizes.sock_revnat_entries)
        .map_max_entries(lb_common::AFFINITY4, sizes.affinity_entries)
        .map_max_entries(BACKENDS4, sizes.backends.backends)
        .map_max_entries(
            lb_common::algorithm::BACKEND_CONNECTIONS,
            sizes.backends.connections,
        )
        .override_global(GLOBAL_DRY_RUN, &u8::from(switches.dry_run), true)
        .override_global(GLOBAL_DEBUG, &u8::from(switches.bpf_log), true)
        .load(object)
        .map_err(|err| load_error(err, pin_dir))
}

/// Turns the loader's error into one an operator can act on.
fn load_error(err: EbpfError, dir: &Path) -> LoadError {
    let EbpfError::MapError(MapError::IncompatiblePinnedMap {
        name,
        property,
        expected,
        actual,
    }) = &err
    else {
        return LoadError::Object {
            dir: dir.to_path_buf(),
            source: Box::new(err),
        };
    };
    let hint = if name == MAGLEV && *property == "max_entries" {
        let tables = |entries: u64| entries;
        format!(
            "it holds {} Maglev tables ({actual} entries) and {} were asked for ({expected} entries): \
             start with max_tables {}",
            tables(*actual),
            tables(*expected),
            tables(*actual),
        )
    } else if name == CT4 && *property == "max_entries" {
        format!(
            "it holds {actual} connection entries and {expected} were asked for: start with --ct-entries {actual}"
        )
    } else if name == FRAGS4 && *property == "max_entries" {
        format!(
            "it holds {actual} fragmented datagrams and {expected} were asked for: start with --frag-entries {actual}"
        )
    } else if name == SOCK_REVNAT4 && *property == "max_entries" {
        format!(
            "it holds {actual} socket translations and {expected} were asked for: start with --sock-revnat-entries {actual}"
        )
    } else if name == lb_common::AFFINITY4 && *property == "max_entries" {
        format!(
            "it holds {actual} session-affinity clients and {expected} were asked for: start with --affinity-entries {actual}"
        )
    } else {
        format!(
            "its {property} is {actual}, this datapath needs {expected} (a layout change needs a migration)"
        )
    };
    LoadError::IncompatiblePinnedMap {
        dir: dir.to_path_buf(),
        name: name.clone(),
        hint,
    }
}

/// A program of the object, by name and type.
pub(super) fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the datapath object"))?;
    Ok(prog.try_into()?)
}

/// Loads (verifies) the programs `lb trace` runs.
pub(super) fn load_trace_programs(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    for name in [PROG_XDP_INGRESS, PROG_TRACE_SOCKET] {
        program_mut::<Xdp>(ebpf, name)?
            .load()
            .with_context(|| format!("loading {name}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_object_is_refused_with_what_to_do() {
        let err = non_empty(&[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "lb was built without its datapath (bpf-linker was missing): run `cargo xtask setup` and rebuild"
        );
        assert_eq!(non_empty(b"\x7fELF").unwrap(), b"\x7fELF");
    }

    #[test]
    fn map_sizes_follow_the_options_and_refuse_zero_or_overflow() {
        let opts = |max_tables, ct_entries| LoadOptions {
            max_tables,
            ct_entries,
            ..LoadOptions::default()
        };
        assert_eq!(
            MapSizes::for_options(&opts(3, 100)).unwrap(),
            MapSizes {
                maglev_entries: 3,
                ct_entries: 100,
                frag_entries: DEFAULT_FRAG_ENTRIES,
                backends: BackendSizes::for_capacity(lb_common::DEFAULT_MAX_BACKENDS),
                sock_revnat_entries: DEFAULT_SOCK_REVNAT_ENTRIES,
                affinity_entries: DEFAULT_AFFINITY_ENTRIES,
            }
        );
        assert!(matches!(
            MapSizes::for_options(&opts(0, 100)),
            Err(LoadError::NoTables)
        ));
        assert!(matches!(
            MapSizes::for_options(&opts(1, 0)),
            Err(LoadError::NoConnectionEntries)
        ));
        // The defaults with one size set to zero.
        let zero = |size: fn(&mut LoadOptions) -> &mut u32| {
            let mut opts = LoadOptions::default();
            *size(&mut opts) = 0;
            MapSizes::for_options(&opts)
        };
        assert!(matches!(
            zero(|o| &mut o.frag_entries),
            Err(LoadError::NoFragmentEntries)
        ));
        assert!(matches!(
            zero(|o| &mut o.sock_revnat_entries),
            Err(LoadError::NoSocketTranslationEntries)
        ));
        assert!(matches!(
            zero(|o| &mut o.affinity_entries),
            Err(LoadError::NoAffinityEntries)
        ));
        let too_many = MAX_TABLE_IDS + 1;
        let err = MapSizes::for_options(&opts(too_many, 1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("max_tables {too_many} is too large (at most {MAX_TABLE_IDS})")
        );
    }

    #[test]
    fn an_undersized_pinned_maglev_map_names_the_tables_to_start_with() {
        let err = load_error(
            EbpfError::MapError(MapError::IncompatiblePinnedMap {
                name: MAGLEV.to_string(),
                property: "max_entries",
                expected: 8,
                actual: 4,
            }),
            Path::new("/sys/fs/bpf/lb"),
        );
        let msg = err.to_string();
        assert!(msg.contains("it holds 4 Maglev tables"), "{msg}");
        assert!(msg.contains("8 were asked for"), "{msg}");
        assert!(msg.contains("start with max_tables 4"), "{msg}");
        assert!(
            msg.contains("`lb cleanup --pin-dir /sys/fs/bpf/lb`"),
            "{msg}"
        );
    }
}
