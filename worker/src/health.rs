//! The HTTP endpoint every stage serves: `/metrics` (Prometheus text),
//! `/healthz` (the process is alive) and `/readyz` (its stages are connected
//! and making progress).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

/// What `/metrics` serves: a registry in Prometheus text format.
pub trait MetricsText: Send + Sync + 'static {
    fn text(&self) -> String;
}

impl MetricsText for Metrics {
    fn text(&self) -> String {
        self.encode()
    }
}

/// Shared between the stages (or the operator) and the endpoint.
#[derive(Default)]
pub struct Health<M = Metrics> {
    pub metrics: M,
    ready: AtomicBool,
}

impl<M> Health<M> {
    pub fn new(metrics: M) -> Self {
        Self { metrics, ready: AtomicBool::new(false) }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

pub fn router<M: MetricsText>(health: Arc<Health<M>>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::<M>))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<M>))
        .with_state(health)
}

async fn metrics<M: MetricsText>(State(health): State<Arc<Health<M>>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        health.metrics.text(),
    )
}

async fn readyz<M: MetricsText>(State(health): State<Arc<Health<M>>>) -> impl IntoResponse {
    if health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Binds the endpoint and serves it in the background; returns the bound
/// address (useful with port 0).
pub async fn serve<M: MetricsText>(addr: SocketAddr, health: Arc<Health<M>>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(health)).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn readiness_follows_the_stages_and_metrics_are_served() {
        let health: Arc<Health> = Arc::new(Health::default());
        health.metrics.stage("export").record_out(7);
        let addr = serve("127.0.0.1:0".parse().unwrap(), health.clone()).await.unwrap();
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        health.set_ready(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/metrics").await.contains(r#"millrace_records_out_total{stage="export"} 7"#));
    }
}
