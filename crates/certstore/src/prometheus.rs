//! The engine's metrics in Prometheus text format, on an HTTP endpoint of their own.
//!
//! [`install`] makes the Prometheus exporter the process's `metrics` recorder (with the
//! help text and units of every certstore metric, and duration buckets from 1 ms to
//! 2 min); [`serve`] answers `GET /metrics` with the current numbers and `GET /healthz`
//! with the caller's health check. `certstore serve --metrics ADDR` uses both.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let handle = certstore::prometheus::install()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9464").await?;
//! tokio::spawn(certstore::prometheus::serve(listener, handle, || true));
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

pub use metrics_exporter_prometheus::BuildError;

/// How often histograms are drained of old samples between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// How long a scrape connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs the Prometheus exporter as the process's `metrics` recorder and describes
/// every certstore metric. Fails when another recorder is installed already. Must be
/// called inside a Tokio runtime: it starts the exporter's periodic upkeep.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets(cert_core::metrics::DURATION_BUCKETS)?
        .install_recorder()?;
    cert_core::metrics::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Answers scrapes on `listener` until the future is dropped: `GET /metrics` renders
/// `handle`, `GET /healthz` is `200 ok` while `healthy()` says so and `503` otherwise,
/// anything else `404`. Each connection is served by a task of its own.
pub async fn serve<H>(listener: TcpListener, handle: PrometheusHandle, healthy: H)
where
    H: Fn() -> bool + Send + Sync + 'static,
{
    let healthy = Arc::new(healthy);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors, say: pause rather than spin.
                tracing::warn!(error = %err, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handle = handle.clone();
        let healthy = Arc::clone(&healthy);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = answer(&request, &handle, healthy.as_ref());
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "metrics endpoint: connection ended");
            }
        });
    }
}

fn answer(
    request: &Request<Incoming>,
    handle: &PrometheusHandle,
    healthy: &dyn Fn() -> bool,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            handle.render(),
        ),
        (&Method::GET, "/healthz") if healthy() => {
            (StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into())
        }
        (&Method::GET, "/healthz") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "unhealthy\n".into(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /metrics or /healthz\n".into(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
