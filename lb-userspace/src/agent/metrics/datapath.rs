//! What the datapath itself counts, read at each scrape: how full each map
//! is, packets by verdict and reason (the per-CPU stats map, summed as
//! `lb stats` sums it), and packets per Service port.
//!
//! - `lb_map_entries{map}`, `lb_map_capacity{map}`: frontends, backends,
//!   maglev_tables, services, connections, socket_translations, affinity;
//! - `lb_packets_total{verdict,reason}`: every datapath decision; the
//!   verdict is the reason's first word (`pass`, `dnat`, `reverse`, `drop`,
//!   `reject`, `sock`, `ct`, `snat`; `icmp` for translated ICMP errors,
//!   `frag` for a first fragment not remembered), so drops are
//!   `verdict="drop"`;
//! - `lb_service_packets_total{service,outcome}`: per Service port, new
//!   flows, established, rejected and dropped packets;
//! - `lb_xdp_forward_packets_total{outcome}`: what forwarding in XDP
//!   (`--xdp-forward`) did with translated packets (`lb_common::forward`);
//! - `lb_table_reader_waits_total{wait}`: the agent's waits for programs
//!   still choosing from a table rewritten in place, `counted` (the
//!   per-CPU counts ended it) or `grace_period` (an RCU grace period
//!   instead: a CPU still busy past the bound), from the writer's own
//!   tally, not the maps.

use std::sync::{Arc, Mutex, atomic::Ordering};

use lb_common::{ServiceCounters, forward::ForwardOutcome, reason::Reason};
use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};
use tracing::warn;

use crate::datapath::{
    DatapathMaps, KernelMaps, MapsError, codec::service_from_info, kernel::ReaderWaits,
};

pub use crate::datapath::kernel::MapFill;

/// The maps the agent writes, whose drift the resync repairs.
pub const AGENT_MAPS: [&str; 4] = ["frontends", "backends", "maglev_tables", "services"];

/// One scrape's reading of the datapath.
#[derive(Clone, Debug, Default)]
pub struct DatapathReading {
    pub maps: Vec<MapFill>,
    pub reasons: Vec<(Reason, u64)>,
    pub services: Vec<ServicePackets>,
    pub forwarded: Vec<(ForwardOutcome, u64)>,
}

/// The counters of one Service port, by its `namespace/name:port`.
#[derive(Clone, Debug)]
pub struct ServicePackets {
    pub service: String,
    pub counters: ServiceCounters,
}

/// Something the scrape can read the datapath's state from.
pub trait DatapathReader: Send {
    fn read(&self) -> Result<DatapathReading, MapsError>;
}

impl DatapathReader for KernelMaps {
    fn read(&self) -> Result<DatapathReading, MapsError> {
        let mut services = Vec::new();
        for (id, info) in self.services()? {
            let Some((name, _)) = service_from_info(&info) else {
                continue;
            };
            services.push(ServicePackets {
                service: name.to_string(),
                counters: self.service_counters(id)?,
            });
        }
        Ok(DatapathReading {
            maps: self.fill()?,
            reasons: self.stats()?,
            services,
            forwarded: self.forward_stats()?,
        })
    }
}

/// The scrape-time collector; holds the reader once the datapath is up,
/// and the writer's tally of its waits for table readers.
#[derive(Clone, Default)]
pub(super) struct Collector {
    reader: Arc<Mutex<Option<Box<dyn DatapathReader>>>>,
    reader_waits: Arc<Mutex<Option<Arc<ReaderWaits>>>>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector").finish_non_exhaustive()
    }
}

impl Collector {
    pub fn attach(&self, reader: Box<dyn DatapathReader>) {
        *self.lock() = Some(reader);
    }

    pub fn attach_reader_waits(&self, waits: Arc<ReaderWaits>) {
        *self
            .reader_waits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(waits);
    }

    /// `lb_table_reader_waits_total{wait}`, once the writer is attached.
    fn encode_reader_waits(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let waits = self
            .reader_waits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let Some(waits) = waits else {
            return Ok(());
        };
        let mut family = encoder.encode_descriptor(
            "lb_table_reader_waits",
            "Waits for programs still choosing from a Maglev table rewritten in place: counted (the per-CPU counts ended it) or grace_period (an RCU grace period instead: a CPU still busy past the bound, named in the log)",
            None,
            MetricType::Counter,
        )?;
        for (wait, count) in [
            ("counted", &waits.counted),
            ("grace_period", &waits.grace_periods),
        ] {
            let labels = WaitLabel { wait };
            ConstCounter::new(count.load(Ordering::Relaxed))
                .encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Box<dyn DatapathReader>>> {
        self.reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reading(&self) -> Option<DatapathReading> {
        let reader = self.lock();
        match reader.as_ref()?.read() {
            Ok(reading) => Some(reading),
            Err(err) => {
                warn!("metrics: reading the datapath's maps failed: {err}");
                None
            }
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabel {
    map: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PacketLabels {
    verdict: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WaitLabel {
    wait: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForwardLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
    outcome: &'static str,
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_reader_waits(&mut encoder)?;
        let Some(reading) = self.reading() else {
            return Ok(());
        };
        let mut family = encoder.encode_descriptor(
            "lb_map_entries",
            "Entries in each datapath map",
            None,
            MetricType::Gauge,
        )?;
        for fill in &reading.maps {
            let labels = MapLabel { map: fill.map };
            ConstGauge::new(fill.entries as i64).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "lb_map_capacity",
            "Entries each datapath map can hold",
            None,
            MetricType::Gauge,
        )?;
        for fill in &reading.maps {
            let labels = MapLabel { map: fill.map };
            ConstGauge::new(fill.capacity as i64).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "lb_packets",
            "Datapath decisions by verdict and reason (see lb stats)",
            None,
            MetricType::Counter,
        )?;
        for (reason, count) in &reading.reasons {
            let name = reason.name();
            let labels = PacketLabels {
                verdict: name.split('_').next().unwrap_or(name),
                reason: name,
            };
            ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "lb_service_packets",
            "Packets and sockets per Service port: new flows, established, rejected, dropped",
            None,
            MetricType::Counter,
        )?;
        for service in &reading.services {
            let c = &service.counters;
            for (outcome, count) in [
                ("new", c.new_flows),
                ("established", c.established),
                ("rejected", c.rejected),
                ("dropped", c.dropped),
            ] {
                let labels = ServiceLabels {
                    service: service.service.clone(),
                    outcome,
                };
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "lb_xdp_forward_packets",
            "Translated packets by what forwarding in XDP did (--xdp-forward): xdp_tx and xdp_redirect left from XDP, stack_* took the kernel's forwarding",
            None,
            MetricType::Counter,
        )?;
        for (outcome, count) in &reading.forwarded {
            let labels = ForwardLabel {
                outcome: outcome.name(),
            };
            ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
