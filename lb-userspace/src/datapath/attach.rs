//! Attaching the programs: XDP and tcx to devices, sock_addr and skb egress
//! to a cgroup.
//!
//! A restarted (or upgraded) agent finds the links pinned for each target
//! and swaps its freshly loaded programs into them with `BPF_LINK_UPDATE`:
//! an atomic replacement, with no moment where no program is attached. A
//! pinned link whose target went away is removed and attached anew.

use std::{
    ffi::CString,
    fs::File,
    os::{fd::AsFd as _, unix::fs::MetadataExt as _},
    path::Path,
};

use anyhow::{Context as _, Result, bail};
use aya::programs::{
    CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, LinkOrder, SchedClassifier,
    TcAttach, TcAttachType, Xdp,
    cgroup_sock_addr::CgroupSockAddrLink,
    links::{FdLink, LinkError},
    tc::SchedClassifierLink,
    xdp::XdpLink,
};

use super::{
    link_update,
    loader::Datapath,
    object::{
        CGROUP_PROGRAMS, PROG_SOCK_EGRESS, PROG_TC_EGRESS, PROG_TC_POD_INGRESS, PROG_XDP_INGRESS,
        program_mut,
    },
    pins,
};

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

impl Datapath {
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
        self.attach_tcx(PROG_TC_EGRESS, iface, TcAttachType::Egress)
    }

    /// Attaches the pod hook (local pods' masqueraded replies) to the
    /// ingress of `iface`, a device the node reaches its pods by, or swaps
    /// it into the link pinned for `iface`.
    pub fn attach_tc_pod_ingress(&mut self, iface: &str) -> Result<Attached> {
        self.attach_tcx(PROG_TC_POD_INGRESS, iface, TcAttachType::Ingress)
    }

    /// Removes the pod hook from `iface` (its pinned link goes, and with it
    /// the attachment); `false`: it was not hooked.
    pub fn detach_tc_pod_ingress(&mut self, iface: &str) -> Result<bool> {
        self.check_attachable()?;
        let Some(pin) = self.link_pin(PROG_TC_POD_INGRESS, iface)? else {
            return Ok(false);
        };
        match std::fs::remove_file(&pin) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err).with_context(|| format!("removing {}", pin.display())),
        }
    }

    /// The devices the pod hook's links are pinned on (an earlier agent's
    /// too).
    pub fn pod_hook_devices(&self) -> Result<std::collections::BTreeSet<String>> {
        let Some(dir) = self.pin_dir.as_deref() else {
            return Ok(Default::default());
        };
        pins::pinned_targets(dir, PROG_TC_POD_INGRESS)
    }

    fn attach_tcx(
        &mut self,
        program: &str,
        iface: &str,
        attach_type: TcAttachType,
    ) -> Result<Attached> {
        self.check_attachable()?;
        let pin = self.link_pin(program, iface)?;
        let name = iface_name(iface)?;
        let prog: &mut SchedClassifier = program_mut(&mut self.ebpf, program)?;
        if replace_pinned(pin.as_deref(), "tcx", |link: SchedClassifierLink| {
            let id = prog.attach_to_link(link)?;
            prog.take_link(id)?;
            Ok(())
        })? {
            return Ok(Attached::Replaced);
        }
        let tcx = TcAttach::Tcx {
            attach_type,
            order: LinkOrder::default(),
        };
        let id = prog
            .attach(&name, tcx)
            .with_context(|| format!("attaching tcx {attach_type:?} to {iface}"))?;
        if let Some(pin) = &pin {
            pin_new(prog.take_link(id)?, pin, "tcx")?;
        }
        Ok(Attached::New)
    }

    /// Attaches the socket programs (the four sock_addr ones and the skb
    /// egress check) to the cgroup v2 directory `cgroup`
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
        if self.attach_sock_egress(&dir, cgroup, &target)? == Attached::New {
            outcome = Attached::New;
        }
        Ok(outcome)
    }

    /// The cgroup skb egress program beside the socket programs (the check
    /// of sources they could not see), swapped into its pinned link if any.
    fn attach_sock_egress(&mut self, dir: &File, cgroup: &Path, target: &str) -> Result<Attached> {
        let pin = self.link_pin(PROG_SOCK_EGRESS, target)?;
        let prog: &mut CgroupSkb = program_mut(&mut self.ebpf, PROG_SOCK_EGRESS)?;
        if let Some(pin) = pin.as_deref().filter(|pin| pin.exists()) {
            match link_update::swap_program(pin, prog.fd()?.as_fd()) {
                Ok(()) => return Ok(Attached::Replaced),
                Err(err) if err.raw_os_error() == Some(libc::ENOLINK) => {
                    pins::remove_stale_pin(pin)?;
                }
                Err(err) => {
                    return Err(err)
                        .with_context(|| format!("replacing the program of {}", pin.display()));
                }
            }
        }
        let link_id = prog
            .attach(dir, CgroupSkbAttachType::Egress, CgroupAttachMode::Single)
            .with_context(|| format!("attaching {PROG_SOCK_EGRESS} to {}", cgroup.display()))?;
        if let Some(pin) = &pin {
            pin_new(prog.take_link(link_id)?, pin, "cgroup skb")?;
        }
        Ok(Attached::New)
    }

    fn check_attachable(&self) -> Result<()> {
        if self.inspect_only {
            bail!(
                "this datapath was loaded for inspection over the agent's pinned maps: it is never attached"
            );
        }
        Ok(())
    }

    /// Where the link of `prog` on `target` is pinned; `None` for an
    /// unpinned datapath.
    fn link_pin(&self, prog: &str, target: &str) -> Result<Option<std::path::PathBuf>> {
        self.pin_dir
            .as_deref()
            .map(|dir| pins::link_pin(dir, prog, target))
            .transpose()
    }
}

fn iface_name(iface: &str) -> Result<CString> {
    CString::new(iface).with_context(|| format!("invalid interface name {iface:?}"))
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
    let Some(link) = pins::open_pinned_link(pin)? else {
        return Ok(false);
    };
    match L::try_from(link)
        .with_context(|| format!("the pinned link is not a {kind} link"))
        .and_then(swap)
    {
        Ok(()) => Ok(true),
        Err(err) if pins::is_defunct(&err) => {
            pins::remove_stale_pin(pin)?;
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
    pins::pin_link(link, pin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_flag_picks_the_xdp_mode() {
        assert_eq!(XdpAttachMode::from(true), XdpAttachMode::Generic);
        assert_eq!(XdpAttachMode::from(false), XdpAttachMode::Auto);
        assert!(matches!(
            aya::programs::XdpMode::from(XdpAttachMode::Native),
            aya::programs::XdpMode::Driver
        ));
    }
}
