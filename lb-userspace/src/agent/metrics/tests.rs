//! The exposition, read back by an independent parser of the Prometheus
//! text format (prometheus-parse), not by substring.

use std::collections::BTreeMap;

use lb_common::{ServiceCounters, reason::Reason};

use super::*;
use crate::agent::http::get;

/// Every sample, by name and labels, as the parser reads them.
fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses")
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.last().map_or(f64::NAN, |b| b.count)
            }
            _ => f64::NAN,
        })
}

#[test]
fn skipped_objects_are_counted_by_code_and_warnings_are_not() {
    let metrics = Metrics::new();
    metrics.count_problems(&[
        Problem::error("a.yaml (document 1)", ProblemCode::InvalidYaml, "x"),
        Problem::error("b.yaml (document 1)", ProblemCode::InvalidYaml, "y"),
        Problem::warning("Service d/w", ProblemCode::IgnoredField, "z"),
    ]);
    let scrape = parse(&metrics.render());
    let skipped = |reason| value(&scrape, "lb_skipped_objects", &[("reason", reason)]);
    assert_eq!(skipped("invalid-yaml"), Some(2.0));
    assert_eq!(skipped("ignored-field"), Some(0.0));
    metrics.count_problems(&[]);
    let scrape = parse(&metrics.render());
    assert_eq!(
        value(&scrape, "lb_skipped_objects", &[("reason", "invalid-yaml")]),
        Some(0.0),
        "a cleared problem goes back to 0"
    );
}

/// A datapath whose counters the test sets.
struct Fixed(DatapathReading);

impl DatapathReader for Fixed {
    fn read(&self) -> Result<DatapathReading, crate::datapath::MapsError> {
        Ok(self.0.clone())
    }
}

/// kube-proxy's names, types, label and buckets (metrics.go) and ours,
/// with the values the agent recorded, as a Prometheus parser reads them.
#[test]
fn the_exposition_parses_and_carries_kube_proxys_names_and_ours() {
    let metrics = Metrics::new();
    metrics.queued();
    metrics.synced(0.003, true);
    metrics.synced(0.5, false);
    metrics.sync_failed("apply");
    metrics.programmed(1.5);
    metrics.repaired("frontends", 3);
    metrics.count_probe(true, 503);
    metrics.attach_datapath(Box::new(Fixed(DatapathReading {
        maps: vec![MapFill {
            map: "connections",
            entries: 12,
            capacity: 262_144,
        }],
        reasons: vec![(Reason::DnatNew, 40), (Reason::DropNoLocalEndpoint, 2)],
        services: vec![ServicePackets {
            service: "shop/web:http".into(),
            counters: ServiceCounters {
                new_flows: 7,
                established: 30,
                rejected: 0,
                dropped: 1,
            },
        }],
        forwarded: vec![
            (lb_common::forward::ForwardOutcome::Transmitted, 9),
            (lb_common::forward::ForwardOutcome::StackNoNeighbour, 1),
        ],
    })));
    let waits = std::sync::Arc::new(crate::datapath::kernel::ReaderWaits::default());
    waits
        .counted
        .store(41, std::sync::atomic::Ordering::Relaxed);
    waits
        .grace_periods
        .store(1, std::sync::atomic::Ordering::Relaxed);
    metrics.attach_table_reader_waits(waits);
    let text = metrics.render();
    let scrape = parse(&text);
    let types: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    for (name, kind) in [
        ("kubeproxy_sync_proxy_rules_duration_seconds", "histogram"),
        ("kubeproxy_sync_proxy_rules_last_timestamp_seconds", "gauge"),
        (
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "gauge",
        ),
        (
            "kubeproxy_network_programming_duration_seconds",
            "histogram",
        ),
        ("kubeproxy_proxy_healthz", "counter"),
        ("lb_sync_failures", "counter"),
        ("lb_resync_repaired_entries", "counter"),
        ("lb_map_entries", "gauge"),
        ("lb_map_capacity", "gauge"),
        ("lb_packets", "counter"),
        ("lb_service_packets", "counter"),
        ("lb_xdp_forward_packets", "counter"),
        ("lb_table_reader_waits", "counter"),
    ] {
        assert_eq!(types.get(name), Some(&kind), "{name} in\n{text}");
    }
    let ipv4 = [("ip_family", "IPv4")];
    assert_eq!(
        value(
            &scrape,
            "kubeproxy_sync_proxy_rules_duration_seconds_count",
            &ipv4
        ),
        Some(2.0),
        "every sync counts, failed or not"
    );
    // Upstream's buckets: ExponentialBuckets(0.001, 2, 15), 1 ms to 16.384 s.
    let sync = scrape
        .samples
        .iter()
        .find(|s| s.metric == "kubeproxy_sync_proxy_rules_duration_seconds")
        .expect("the histogram");
    let prometheus_parse::Value::Histogram(buckets) = &sync.value else {
        panic!("not a histogram: {sync:?}");
    };
    let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
    assert_eq!(bounds.len(), 16, "15 buckets and +Inf: {bounds:?}");
    assert_eq!((bounds[0], bounds[14]), (0.001, 16.384));
    assert_eq!(buckets[2].count, 1.0, "3 ms is in the 4 ms bucket");
    let last = value(
        &scrape,
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        &ipv4,
    )
    .unwrap();
    let queued = value(
        &scrape,
        "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
        &ipv4,
    )
    .unwrap();
    assert!(
        last > 1.7e9 && queued > 1.7e9 && last >= queued,
        "{last} {queued}"
    );
    assert_eq!(
        value(
            &scrape,
            "kubeproxy_network_programming_duration_seconds_sum",
            &ipv4
        ),
        Some(1.5)
    );
    assert_eq!(
        value(&scrape, "kubeproxy_proxy_healthz_total", &[("code", "503")]),
        Some(1.0)
    );
    assert_eq!(
        value(&scrape, "lb_sync_failures_total", &[("stage", "apply")]),
        Some(1.0)
    );
    for (wait, count) in [("counted", 41.0), ("grace_period", 1.0)] {
        assert_eq!(
            value(&scrape, "lb_table_reader_waits_total", &[("wait", wait)]),
            Some(count)
        );
    }
    assert_eq!(
        value(&scrape, "lb_sync_failures_total", &[("stage", "source")]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &scrape,
            "lb_resync_repaired_entries_total",
            &[("map", "frontends")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &scrape,
            "lb_resync_repaired_entries_total",
            &[("map", "backends")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&scrape, "lb_map_entries", &[("map", "connections")]),
        Some(12.0)
    );
    assert_eq!(
        value(&scrape, "lb_map_capacity", &[("map", "connections")]),
        Some(262_144.0)
    );
    assert_eq!(
        value(
            &scrape,
            "lb_packets_total",
            &[("verdict", "drop"), ("reason", "drop_no_local_endpoint")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &scrape,
            "lb_packets_total",
            &[("verdict", "dnat"), ("reason", "dnat_new")]
        ),
        Some(40.0)
    );
    assert_eq!(
        value(
            &scrape,
            "lb_xdp_forward_packets_total",
            &[("outcome", "xdp_tx")]
        ),
        Some(9.0)
    );
    assert_eq!(
        value(
            &scrape,
            "lb_service_packets_total",
            &[("service", "shop/web:http"), ("outcome", "established")]
        ),
        Some(30.0)
    );
}

/// Upstream's NetworkProgrammingLatency buckets: 0, 0.25, 0.5, 1..59,
/// 60..115 by 5, 120..300 by 30 (81 bounds, and +Inf).
#[test]
fn network_programming_buckets_are_kube_proxys() {
    let metrics = Metrics::new();
    let scrape = parse(&metrics.render());
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "kubeproxy_network_programming_duration_seconds")
        .expect("registered before any observation");
    let prometheus_parse::Value::Histogram(buckets) = &histogram.value else {
        panic!("not a histogram");
    };
    let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
    assert_eq!(bounds.len(), 82, "{bounds:?}");
    assert_eq!(&bounds[..4], &[0.0, 0.25, 0.5, 1.0]);
    assert_eq!(bounds[62], 60.0);
    assert_eq!(bounds[74], 120.0);
    assert_eq!(bounds[80], 300.0);
}

#[tokio::test]
async fn the_endpoint_answers_metrics_and_nothing_else() {
    let address = serve("127.0.0.1:0".parse().unwrap(), Metrics::new())
        .await
        .expect("serve");
    let (status, body) = get(address, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    let scrape = parse(&body);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "lb_skipped_objects")
    );
    assert_eq!(get(address, "/").await.0, 404);
}

/// The sweep's outcome: live flows by state (every state present, at 0
/// when none), expired flows accumulated across sweeps.
#[test]
fn the_sweep_sets_live_flows_by_state_and_counts_expired_ones() {
    use lb_common::ct::{CT_ESTABLISHED, CT_UNREPLIED};
    let metrics = Metrics::new();
    metrics
        .ct
        .swept(&[(CT_ESTABLISHED, 3), (CT_UNREPLIED, 7)], 5, 0.25);
    metrics.ct.swept(&[(CT_ESTABLISHED, 2)], 4, 0.5);
    let scrape = parse(&metrics.render());
    let live = |state| value(&scrape, "lb_ct_entries", &[("state", state)]);
    assert_eq!(live("established"), Some(2.0));
    assert_eq!(live("unreplied"), Some(0.0), "gone since the last sweep");
    assert_eq!(live("syn_sent"), Some(0.0));
    assert_eq!(value(&scrape, "lb_ct_expired_total", &[]), Some(9.0));
    assert_eq!(
        value(&scrape, "lb_ct_sweep_duration_seconds", &[]),
        Some(0.5)
    );
}

/// A slice in namespace `ns` whose trigger-time annotation is `when`.
fn annotated_slice(name: &str, when: &str) -> std::sync::Arc<crate::source::Slice> {
    std::sync::Arc::new(
        serde_json::from_value::<k8s_openapi::api::discovery::v1::EndpointSlice>(
            serde_json::json!({
                "metadata": {"namespace": "ns", "name": name, "annotations": {
                    super::programming::LAST_CHANGE_TRIGGER_TIME: when}},
                "addressType": "IPv4", "endpoints": []
            }),
        )
        .expect("a slice")
        .into(),
    )
}

/// A slice's trigger time is observed once; a slice deleted is forgotten,
/// so the same value on a slice recreated later is observed again (its
/// programming happened again), while unchanged slices beside it are not.
#[test]
fn trigger_times_are_forgotten_with_their_slice() {
    let started = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
    let when = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1)).to_string();
    let slice = |name: &str| annotated_slice(name, &when);
    let mut times = super::TriggerTimes::started_at(started);
    let both = [slice("a"), slice("b")];
    let pending = times.pending(&both);
    assert_eq!(times.applied(pending, jiff::Timestamp::now()).len(), 2);
    let pending = times.pending(&both);
    assert!(times.applied(pending, jiff::Timestamp::now()).is_empty());
    let pending = times.pending(&both[..1]);
    assert!(times.applied(pending, jiff::Timestamp::now()).is_empty());
    let pending = times.pending(&both);
    assert_eq!(
        times.applied(pending, jiff::Timestamp::now()).len(),
        1,
        "b was forgotten, a was not"
    );
}

/// A slice replaced by a new object (the watch's update) is looked at
/// again and its new trigger time observed once, while the unchanged
/// slices, the same objects as before, are passed over by address; the
/// addresses of the replaced ones are dropped now and then, so what the
/// tracker keeps stays near the slice count however many changes come.
#[test]
fn trigger_times_of_replaced_slices_are_observed_and_old_addresses_dropped() {
    use std::sync::Arc;

    use crate::source::Slice;
    let started = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
    let slice = |name: &str, ago: i64| -> Arc<Slice> {
        let when = jiff::Timestamp::now() - jiff::SignedDuration::from_millis(ago);
        annotated_slice(name, &when.to_string())
    };
    let mut times = super::TriggerTimes::started_at(started);
    let mut slices: Vec<Arc<Slice>> = (0..10).map(|i| slice(&format!("s{i}"), 5_000)).collect();
    let pending = times.pending(&slices);
    assert_eq!(times.applied(pending, jiff::Timestamp::now()).len(), 10);
    for change in 0..300i64 {
        slices[(change % 10) as usize] = slice(&format!("s{}", change % 10), 1_000 - change);
        let pending = times.pending(&slices);
        let observed = times.applied(pending, jiff::Timestamp::now());
        assert_eq!(observed.len(), 1, "change {change}");
        assert!(observed[0] > 0.5, "change {change}: {observed:?}");
        let pending = times.pending(&slices);
        assert!(times.applied(pending, jiff::Timestamp::now()).is_empty());
    }
    assert!(
        times.checked_len() <= 10 + 10 / 8 + 64 + 1,
        "{}",
        times.checked_len()
    );
}
