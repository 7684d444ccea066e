//! The worker's Prometheus metrics, one registry per process, labelled by
//! stage so that embedded mode reports each stage apart.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::dead_letter::Reason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub stage: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub stage: String,
    pub kind: String,
}

/// Every metric of the worker.
pub struct Metrics {
    pub registry: Registry,
    pub records_in: Family<StageLabel, Counter>,
    pub records_out: Family<StageLabel, Counter>,
    pub dead_letters: Family<ReasonLabel, Counter>,
    pub batch_size: Family<StageLabel, Histogram>,
    pub lag: Family<StageLabel, Gauge>,
    pub errors: Family<ErrorLabel, Counter>,
    /// Join stage: duration of each committed transaction.
    pub transaction_seconds: Histogram,
    /// Join stage: records held per partition.
    pub join_state_records: Family<PartitionLabel, Gauge>,
    /// Join: held records dropped by a rule's horizon.
    pub join_expired_records: Counter,
    /// Join: pairs emitted when their record expired (without its `next`).
    pub join_expired_pairs: Counter,
    /// Join stage: records and tombstones written to the join state topic.
    pub join_state_writes: Counter,
    /// Join stage: raw partitions this worker holds now (0 between a
    /// revocation and the next assignment).
    pub join_assigned_partitions: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub partition: i32,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("millrace");
        let records_in = Family::<StageLabel, Counter>::default();
        let records_out = Family::<StageLabel, Counter>::default();
        let dead_letters = Family::<ReasonLabel, Counter>::default();
        let batch_size = Family::<StageLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(1.0, 4.0, 10))) as fn() -> Histogram,
        );
        let lag = Family::<StageLabel, Gauge>::default();
        let errors = Family::<ErrorLabel, Counter>::default();
        let transaction_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let join_state_records = Family::<PartitionLabel, Gauge>::default();
        registry.register("records_in", "Records (or messages) a stage has read", records_in.clone());
        registry.register("records_out", "Records a stage has delivered downstream", records_out.clone());
        registry.register("dead_letters", "Inputs sent to the dead letters, by reason", dead_letters.clone());
        registry.register("batch_size", "Records per batch written or committed", batch_size.clone());
        registry.register("lag", "Records waiting upstream of the stage (consumer lag)", lag.clone());
        registry.register("errors", "Errors a stage retried or survived, by kind", errors.clone());
        registry.register("join_transaction_seconds", "Duration of the join stage's committed transactions", transaction_seconds.clone());
        registry.register("join_state_records", "Records the join holds, per partition", join_state_records.clone());
        let join_expired_records = Counter::default();
        let join_expired_pairs = Counter::default();
        registry.register("join_expired_records", "Held records the join dropped beyond a rule's stateHorizon", join_expired_records.clone());
        registry.register("join_expired_pairs", "Pairs emitted when their record expired beyond the stateHorizon, without its next", join_expired_pairs.clone());
        let join_state_writes = Counter::default();
        registry.register("join_state_writes", "Held records and tombstones the join stage wrote to its state topic", join_state_writes.clone());
        let join_assigned_partitions = Gauge::default();
        registry.register("join_assigned_partitions", "Raw topic partitions the join stage holds now", join_assigned_partitions.clone());
        Self {
            registry,
            records_in,
            records_out,
            dead_letters,
            batch_size,
            lag,
            errors,
            transaction_seconds,
            join_state_records,
            join_expired_records,
            join_expired_pairs,
            join_state_writes,
            join_assigned_partitions,
        }
    }
}

impl Metrics {
    pub fn stage(&self, stage: &str) -> StageMetrics<'_> {
        StageMetrics { metrics: self, stage: stage.to_string() }
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// The metrics of one stage.
pub struct StageMetrics<'a> {
    metrics: &'a Metrics,
    stage: String,
}

impl StageMetrics<'_> {
    fn label(&self) -> StageLabel {
        StageLabel { stage: self.stage.clone() }
    }
    pub fn record_in(&self, n: u64) {
        self.metrics.records_in.get_or_create(&self.label()).inc_by(n);
    }
    pub fn record_out(&self, n: u64) {
        self.metrics.records_out.get_or_create(&self.label()).inc_by(n);
    }
    pub fn dead_letter(&self, reason: &Reason) {
        let label = ReasonLabel { stage: self.stage.clone(), reason: reason.as_str().to_string() };
        self.metrics.dead_letters.get_or_create(&label).inc();
    }
    pub fn batch(&self, size: usize) {
        self.metrics.batch_size.get_or_create(&self.label()).observe(size as f64);
    }
    pub fn set_lag(&self, lag: i64) {
        self.metrics.lag.get_or_create(&self.label()).set(lag);
    }
    pub fn error(&self, kind: &str) {
        let label = ErrorLabel { stage: self.stage.clone(), kind: kind.to_string() };
        self.metrics.errors.get_or_create(&label).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_in_the_text_format_with_their_labels() {
        let m = Metrics::default();
        let ingest = m.stage("ingest");
        ingest.record_in(3);
        ingest.dead_letter(&Reason::MalformedJson);
        ingest.batch(100);
        let text = m.encode();
        assert!(text.contains(r#"millrace_records_in_total{stage="ingest"} 3"#), "{text}");
        assert!(text.contains(r#"millrace_dead_letters_total{stage="ingest",reason="malformed_json"} 1"#), "{text}");
        assert!(text.contains(r#"millrace_batch_size_count{stage="ingest"} 1"#), "{text}");
    }
}
