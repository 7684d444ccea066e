//! The operator's Prometheus metrics: reconciles by result and their
//! duration.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

pub struct OperatorMetrics {
    registry: Registry,
    pub reconciles: Family<ResultLabel, Counter>,
    pub reconcile_seconds: Histogram,
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("millrace_operator");
        let reconciles = Family::<ResultLabel, Counter>::default();
        let reconcile_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register("reconciles", "Reconciles of StreamPipelines, by result (ok, error)", reconciles.clone());
        registry.register("reconcile_seconds", "Duration of a reconcile", reconcile_seconds.clone());
        Self { registry, reconciles, reconcile_seconds }
    }
}

impl OperatorMetrics {
    pub fn observe(&self, ok: bool, seconds: f64) {
        self.reconciles.get_or_create(&ResultLabel { result: if ok { "ok" } else { "error" } }).inc();
        self.reconcile_seconds.observe(seconds);
    }
}

impl millrace_health::MetricsText for OperatorMetrics {
    fn text(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_health::MetricsText;

    #[test]
    fn reconciles_are_counted_by_result() {
        let m = OperatorMetrics::default();
        m.observe(true, 0.01);
        m.observe(false, 0.02);
        let text = m.text();
        assert!(text.contains(r#"millrace_operator_reconciles_total{result="ok"} 1"#), "{text}");
        assert!(text.contains("millrace_operator_reconcile_seconds_count 2"), "{text}");
    }
}
