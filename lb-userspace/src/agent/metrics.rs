//! The agent's Prometheus endpoint (`--metrics-bind-address`, kube-proxy's
//! flag and port: `127.0.0.1:10249`, path `/metrics`).
//!
//! `lb_skipped_objects{reason}`: objects (or parts of them) not served, by
//! problem code. Every code is exported, at 0 when nothing has it, so a
//! dashboard sees a problem clear rather than a series vanish.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use tracing::{info, warn};

use crate::model::{Problem, ProblemCode, Severity};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The agent's metrics; cheap to share.
pub struct Metrics {
    registry: Registry,
    skipped: Family<ReasonLabel, Gauge>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let skipped = Family::<ReasonLabel, Gauge>::default();
        registry.register(
            "lb_skipped_objects",
            "Objects or parts of them not served, by problem code (see lb status)",
            skipped.clone(),
        );
        let metrics = Metrics { registry, skipped };
        metrics.count_problems(&[]);
        Arc::new(metrics)
    }

    /// Sets the gauge to the current problems; warnings (served anyway)
    /// are not skipped objects.
    pub fn count_problems(&self, problems: &[Problem]) {
        for code in ProblemCode::ALL {
            let count = problems
                .iter()
                .filter(|p| p.code == code && p.severity == Severity::Error)
                .count();
            self.skipped
                .get_or_create(&ReasonLabel {
                    reason: code.as_str(),
                })
                .set(count as i64);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Binds now (so a taken port fails the start, with the flag to change),
/// then serves in the background.
pub async fn serve(address: SocketAddr, metrics: Arc<Metrics>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| {
            format!("binding the metrics endpoint to {address}; choose another with --metrics-bind-address, or disable it with --metrics-bind-address ''")
        })?;
    info!(%address, "serving metrics at /metrics");
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    warn!("metrics endpoint: accept failed: {err}");
                    continue;
                }
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| answer(request, metrics.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(())
}

async fn answer<B>(
    request: Request<B>,
    metrics: Arc<Metrics>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = if request.uri().path() == "/metrics" {
        Response::builder()
            .header(
                hyper::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(metrics.render())))
    } else {
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"not found: try /metrics\n")))
    };
    Ok(response.expect("a response of constant parts"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_objects_are_counted_by_code_and_warnings_are_not() {
        let metrics = Metrics::new();
        metrics.count_problems(&[
            Problem::error("a.yaml (document 1)", ProblemCode::InvalidYaml, "x"),
            Problem::error("b.yaml (document 1)", ProblemCode::InvalidYaml, "y"),
            Problem::warning("Service d/w", ProblemCode::IgnoredField, "z"),
        ]);
        let text = metrics.render();
        assert!(
            text.contains("lb_skipped_objects{reason=\"invalid-yaml\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("lb_skipped_objects{reason=\"ignored-field\"} 0\n"),
            "{text}"
        );
        metrics.count_problems(&[]);
        assert!(
            metrics
                .render()
                .contains("lb_skipped_objects{reason=\"invalid-yaml\"} 0\n"),
            "a cleared problem goes back to 0"
        );
    }

    #[tokio::test]
    async fn the_endpoint_answers_metrics_and_nothing_else() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = probe.local_addr().unwrap();
        drop(probe);
        serve(address, Metrics::new()).await.expect("serve");
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            answer
        };
        let metrics = get("/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("lb_skipped_objects{reason="), "{metrics}");
        assert!(get("/").await.starts_with("HTTP/1.1 404"));
    }
}
