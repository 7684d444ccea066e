//! millrace-health: the HTTP endpoint both binaries serve: `/metrics`
//! (Prometheus text), `/healthz` (the process is alive) and `/readyz` (the
//! worker's stages are connected and making progress; the operator is
//! reconciling or waiting to lead).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// What `/metrics` serves: a registry in Prometheus text format.
pub trait MetricsText: Send + Sync + 'static {
    fn text(&self) -> String;
}

/// Shared between the stages (or the operator) and the endpoint.
#[derive(Default)]
pub struct Health<M> {
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

/// The default listen address: `[::]`, every IPv6 address and (the socket
/// being dual-stack) every IPv4 one, so that IPv6-only and dual-stack
/// clusters reach the endpoint as IPv4 ones do.
pub const ANY: std::net::IpAddr = std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);

/// Binds `addr`; `[::]` on a kernel without IPv6 falls back to `0.0.0.0`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(addr).await {
        Err(e) if addr.ip() == ANY => {
            let v4 = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), addr.port());
            tracing::info!(error = %e, "no IPv6 here: listening on {v4}");
            tokio::net::TcpListener::bind(v4).await.map_err(|_| e)
        }
        bound => bound,
    }
}

/// Binds the endpoint and serves it in the background; returns the bound
/// address (useful with port 0).
pub async fn serve<M: MetricsText>(addr: SocketAddr, health: Arc<Health<M>>) -> std::io::Result<SocketAddr> {
    let listener = bind(addr).await?;
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

    #[tokio::test]
    async fn the_default_address_takes_ipv4_and_ipv6_clients() {
        let listener = bind(SocketAddr::new(ANY, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("an IPv4 client");
        if std::net::TcpListener::bind("[::1]:0").is_ok() {
            tokio::net::TcpStream::connect(("::1", port)).await.expect("an IPv6 client");
        }
    }
}
