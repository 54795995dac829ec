//! What each `lb` command does, once its arguments are parsed.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::{
    agent::{self, AgentConfig, status},
    datapath::{
        KernelMaps,
        loader::Datapath,
        trace::{Tracer, build_frame},
    },
    model::Protocol,
    ops::{
        explain::{self, Entry},
        inspect::Inspector,
        output::{self, Format},
        status as ops_status,
    },
};

/// Where a running agent's maps are, and how to print what is read there.
pub struct Reader {
    pub pin_dir: PathBuf,
    pub format: Format,
}

impl Reader {
    fn inspector(&self) -> Result<Inspector> {
        let maps = KernelMaps::open_pinned(&self.pin_dir).with_context(|| {
            format!(
                "reading the datapath pinned at {} (is `lb agent` running with --pin-dir {0}?)",
                self.pin_dir.display()
            )
        })?;
        Ok(Inspector::open(maps)?)
    }

    fn print<T: serde::Serialize>(&self, view: &T, human: impl FnOnce(&T) -> String) -> Result<()> {
        match self.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(view)?),
            Format::Table => print!("{}", human(view)),
        }
        Ok(())
    }
}

/// `lb service list`
pub fn list_services(reader: &Reader) -> Result<()> {
    reader.print(&reader.inspector()?.services()?, |v| output::services(v))
}

/// `lb backend list`
pub fn list_backends(reader: &Reader) -> Result<()> {
    reader.print(&reader.inspector()?.backends()?, |v| output::backends(v))
}

/// `lb conntrack list`, narrowed to flows with `addr` and `port` anywhere.
pub fn list_connections(reader: &Reader, addr: Option<Ipv4Addr>, port: Option<u16>) -> Result<()> {
    reader.print(&reader.inspector()?.connections(addr, port)?, |v| {
        output::connections(v)
    })
}

/// `lb affinity list`
pub fn list_affinity(reader: &Reader) -> Result<()> {
    let views = crate::ops::affinity::list(
        &reader.inspector()?,
        crate::ops::affinity::monotonic_now_s(),
    )?;
    reader.print(&views, |v| crate::ops::affinity::render(v))
}

/// `lb stats`
pub fn stats(reader: &Reader) -> Result<()> {
    reader.print(&reader.inspector()?.stats()?, output::stats)
}

/// `lb status`
pub fn status(state_dir: &Path, pin_dir: &Path, format: Format) -> Result<()> {
    let view = ops_status::read(state_dir, pin_dir, status::unix_now())?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&view)?),
        Format::Table => print!("{}", ops_status::render(&view, status::unix_now())),
    }
    Ok(())
}

/// `lb cleanup`
pub fn cleanup(pin_dir: &Path) -> Result<()> {
    Datapath::remove_pins(pin_dir)
}

/// `lb agent`: runs until SIGINT or SIGTERM.
pub fn agent(config: AgentConfig) -> Result<()> {
    crate::agent::malloc_arenas::limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(agent::run(config))
}

/// One packet for `lb trace` to run through the live datapath.
pub struct TraceRequest {
    pub reader: Reader,
    pub from: Entry,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub protocol: Protocol,
    /// The socket cookie of a real socket (`--from pod|node`).
    pub cookie: Option<u64>,
    /// The client's network namespace cookie (`--from pod|node`), for
    /// session affinity.
    pub netns_cookie: Option<u64>,
}

/// `lb trace`
pub fn trace(request: &TraceRequest) -> Result<()> {
    let tracer = Tracer::load(&request.reader.pin_dir)?;
    let frame = build_frame(request.src, request.dst, request.protocol);
    // A new socket's cookie is unknowable beforehand; 1 stands for "some socket".
    let cookie = request.cookie.unwrap_or(1);
    let outcome = match request.from {
        Entry::External => tracer.trace_external(&frame)?,
        Entry::Pod | Entry::Node => {
            tracer.trace_socket_in(&frame, cookie, request.netns_cookie.unwrap_or(0))?
        }
    };
    let inspector = Inspector::open(tracer.maps()?)?;
    let mut report = explain::report(
        request.from,
        request.src,
        request.dst,
        request.protocol,
        &outcome.record,
        &inspector,
    );
    if request.from != Entry::External && request.cookie.is_none() && report.decided_by.is_some() {
        report.steps.insert(
            1,
            "no --cookie given: each new socket hashes its own cookie, so this is one possible backend".to_string(),
        );
    }
    request.reader.print(&report, output::trace)
}
