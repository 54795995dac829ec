//! Human output of the operator commands: aligned tables. (`-o json`
//! prints the views of `inspect` as they are.)

use std::fmt::Write as _;

use crate::{
    ops::explain::TraceReport,
    ops::inspect::{BackendView, ConnectionView, ServiceView, StatsView},
};

/// `table` for people, `json` for scripts (a stable document).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Renders rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

pub fn services(views: &[ServiceView]) -> String {
    let mut rows = Vec::new();
    for svc in views {
        for fe in &svc.frontends {
            let mut policy = match (fe.kind, fe.scope) {
                ("cluster-ip", _) => format!("itp={}", svc.internal_traffic_policy),
                (_, "external") => format!("etp={}", svc.external_traffic_policy),
                _ => "all endpoints".to_string(),
            };
            if !fe.source_ranges.is_empty() {
                policy.push_str(&format!(", sources {}", fe.source_ranges.join(" ")));
            }
            let backends = if fe.backends.is_empty() {
                format!("none ({})", fe.when_empty)
            } else {
                let list: Vec<String> = fe
                    .backends
                    .iter()
                    .map(|b| match (b.state, b.local) {
                        ("ready", true) => b.address.clone(),
                        (state, local) => format!(
                            "{} ({state}{})",
                            b.address,
                            if local { "" } else { ", remote" }
                        ),
                    })
                    .collect();
                list.join(", ")
            };
            rows.push(vec![
                svc.service.clone(),
                fe.kind.to_string(),
                format!("{}/{}", fe.address, svc.protocol),
                fe.scope.to_string(),
                policy,
                svc.algorithm.to_string(),
                backends,
            ]);
        }
    }
    table(
        &[
            "SERVICE",
            "KIND",
            "FRONTEND",
            "SCOPE",
            "POLICY",
            "ALGORITHM",
            "BACKENDS",
        ],
        &rows,
    )
}

pub fn backends(views: &[BackendView]) -> String {
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|b| {
            vec![
                b.id.to_string(),
                format!("{}/{}", b.address, b.protocol),
                b.state.to_string(),
                if b.local { "local" } else { "remote" }.to_string(),
                b.services.join(", "),
            ]
        })
        .collect();
    table(&["ID", "BACKEND", "STATE", "NODE", "SERVICES"], &rows)
}

pub fn connections(views: &[ConnectionView]) -> String {
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|c| {
            vec![
                c.protocol.clone(),
                c.client.clone(),
                c.frontend.clone(),
                c.backend.clone(),
                c.translated_source.clone().unwrap_or_else(|| "-".into()),
                c.service.clone().unwrap_or_else(|| "-".into()),
                c.state.to_string(),
                format!("{}s", c.age_seconds),
                format!("{}s", c.idle_seconds),
            ]
        })
        .collect();
    table(
        &[
            "PROTO", "CLIENT", "FRONTEND", "BACKEND", "SNAT", "SERVICE", "STATE", "AGE", "IDLE",
        ],
        &rows,
    )
}

pub fn stats(view: &StatsView) -> String {
    let reasons: Vec<Vec<String>> = view
        .reasons
        .iter()
        .map(|r| vec![r.reason.to_string(), r.count.to_string()])
        .collect();
    let services: Vec<Vec<String>> = view
        .services
        .iter()
        .map(|s| {
            let c = &s.counters;
            vec![
                s.service.clone(),
                c.new_flows.to_string(),
                c.established.to_string(),
                c.rejected.to_string(),
                c.dropped.to_string(),
            ]
        })
        .collect();
    let forwarded: Vec<Vec<String>> = view
        .forwarded
        .iter()
        .map(|r| vec![r.reason.to_string(), r.count.to_string()])
        .collect();
    format!(
        "{}\n{}\n{}",
        table(&["REASON", "PACKETS"], &reasons),
        table(
            &["SERVICE", "NEW", "ESTABLISHED", "REJECTED", "DROPPED"],
            &services
        ),
        table(&["XDP FORWARD", "PACKETS"], &forwarded)
    )
}

pub fn trace(report: &TraceReport) -> String {
    let mut out = String::new();
    let target = match (&report.backend, &report.service) {
        (Some(backend), Some(service)) => format!(" -> {backend} ({service})"),
        (None, Some(service)) => format!(" ({service})"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "packet   {} -> {}/{}, from {}",
        report.packet.source,
        report.packet.destination,
        report.packet.protocol,
        report.entry.name()
    );
    let _ = writeln!(
        out,
        "verdict  {}{target}, reason {}, snat {}",
        report.verdict, report.reason, report.snat
    );
    for (i, step) in report.steps.iter().enumerate() {
        let _ = writeln!(out, "  {}. {step}", i + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_the_last_is_not_padded() {
        let out = table(
            &["A", "LONG"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(out, "A    LONG\nxyz  1\nq    22\n");
    }
}
