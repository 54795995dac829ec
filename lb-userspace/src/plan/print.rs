//! The plan as `lb agent --dry-run` prints it.

use std::fmt;

use super::Plan;
use crate::datapath::codec::{describe_backend, describe_frontend, service_from_info};

impl fmt::Display for Plan {
    /// One write per line, in the order they are applied.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (id, info) in &self.set_services {
            match service_from_info(info) {
                Some((name, port)) => writeln!(
                    f,
                    "set service {id} = {name} ({}, port {})",
                    name.protocol, port.port
                )?,
                None => writeln!(f, "set service {id}")?,
            }
        }
        for (id, be) in &self.set_backends {
            writeln!(f, "set backend {id} = {}", describe_backend(be))?;
        }
        for table in &self.write_tables {
            let names: Vec<String> = table.backends.iter().map(ToString::to_string).collect();
            writeln!(
                f,
                "write maglev table {} over [{}]",
                table.table_id,
                names.join(", ")
            )?;
        }
        for (id, range) in &self.set_source_ranges {
            writeln!(f, "allow source {range} to service {id}")?;
        }
        for (key, value) in &self.set_frontends {
            writeln!(
                f,
                "set frontend {} -> service {} table {} ({} backends){}{}{}{}",
                describe_frontend(key),
                value.service_id,
                value.table_id,
                value.backend_count,
                match crate::datapath::codec::algorithm_from_code(value.algorithm()) {
                    crate::model::Algorithm::Maglev => String::new(),
                    other => format!(", algorithm {other}"),
                },
                match value.affinity_timeout_s() {
                    0 => String::new(),
                    timeout => format!(", affinity ClientIP {timeout}s"),
                },
                if lb_common::snat::masquerades(value) {
                    ", masquerade"
                } else {
                    ""
                },
                if value.has_source_ranges() {
                    ", source ranges"
                } else {
                    ""
                }
            )?;
        }
        for key in &self.remove_frontends {
            writeln!(f, "remove frontend {}", describe_frontend(key))?;
        }
        for (id, range) in &self.remove_source_ranges {
            writeln!(f, "remove source {range} of service {id}")?;
        }
        for addr in &self.set_cluster_ips {
            writeln!(f, "allocate cluster ip {addr}")?;
        }
        for addr in &self.remove_cluster_ips {
            writeln!(f, "release cluster ip {addr}")?;
        }
        for cidr in &self.set_service_cidrs {
            writeln!(f, "set service cidr {cidr}")?;
        }
        for cidr in &self.remove_service_cidrs {
            writeln!(f, "remove service cidr {cidr}")?;
        }
        for (service, be) in &self.purge_connections {
            writeln!(
                f,
                "purge udp flows of service {service} to {}",
                describe_backend(be)
            )?;
        }
        for (service, backend) in &self.purge_affinity {
            writeln!(
                f,
                "purge affinity of service {service} to backend {backend}"
            )?;
        }
        for (id, be) in &self.remove_backends {
            writeln!(f, "remove backend {id} = {}", describe_backend(be))?;
        }
        for id in &self.remove_services {
            writeln!(f, "remove service {id}")?;
        }
        Ok(())
    }
}
