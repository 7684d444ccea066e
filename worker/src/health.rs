//! The HTTP endpoint every stage serves (`/metrics`, `/healthz`, `/readyz`;
//! the `millrace-health` crate), with the worker's metrics behind it.

pub use millrace_health::{router, serve, MetricsText};

use crate::metrics::Metrics;

/// What the stages and the endpoint share: the worker's metrics and whether
/// its stages are ready.
pub type Health = millrace_health::Health<Metrics>;

impl MetricsText for Metrics {
    fn text(&self) -> String {
        self.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::Arc;
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
