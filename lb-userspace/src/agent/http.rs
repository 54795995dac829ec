//! The agent's small HTTP endpoints (metrics, health): bind at start-up,
//! so a taken port fails the start with the flag to change, then answer
//! each GET from a handler in the background.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tracing::{info, warn};

/// Answers one request, by path.
pub type Handler = Arc<dyn Fn(&str) -> Response<Full<Bytes>> + Send + Sync>;

/// Binds `address` now and serves `handler` on it in the background; the
/// bound address (useful with port 0) is returned. `flag` names the option
/// a user changes when the port is taken.
pub async fn serve(
    address: SocketAddr,
    what: &'static str,
    flag: &'static str,
    handler: Handler,
) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| {
            format!("binding the {what} endpoint to {address}; choose another with {flag}, or disable it with {flag} ''")
        })?;
    let bound = listener.local_addr().unwrap_or(address);
    info!(address = %bound, "serving {what}");
    serve_listener(listener, what, handler);
    Ok(bound)
}

/// Serves `handler` on a bound listener in the background, until the task
/// is aborted (which closes the listener).
pub fn serve_listener(
    listener: tokio::net::TcpListener,
    what: &'static str,
    handler: Handler,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    warn!("{what} endpoint: accept failed: {err}");
                    continue;
                }
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let response = handler(request.uri().path());
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// A response of constant parts.
pub fn respond(
    status: hyper::StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .header("X-Content-Type-Options", "nosniff")
        .body(Full::new(body.into()))
        .expect("a response of constant parts")
}

/// GETs `path` from `address` over a fresh connection (tests): the status
/// code and the body.
#[cfg(test)]
pub async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}
