//! What is wrong with a spec that the schema could not say (pure), and the
//! typed value a valid spec becomes: what the reconcile needs beyond the
//! schema is there, so nothing after validation expects it.

use millrace_config::{InfluxDbTarget, KafkaConfig};

use crate::crd::StreamPipeline;

/// A `StreamPipeline` whose spec passed [`validate`].
#[derive(Clone, Copy, Debug)]
pub struct ValidPipeline<'a> {
    pub pipeline: &'a StreamPipeline,
    /// The Kafka the stages run on (a `StreamPipeline` has no embedded mode).
    pub kafka: &'a KafkaConfig,
    /// Where the export stage writes.
    pub influxdb: &'a InfluxDbTarget,
}

/// Checks `p`'s spec; the message names the field that is wrong.
pub fn validate(p: &StreamPipeline) -> Result<ValidPipeline<'_>, String> {
    let pipeline = &p.spec.pipeline;
    pipeline.validate().map_err(|e| format!("spec.pipeline.{e}"))?;
    let kafka = pipeline
        .kafka
        .as_ref()
        .ok_or("spec.pipeline.kafka: a StreamPipeline runs its stages on Kafka; give bootstrapServers")?;
    let influxdb = pipeline.influxdb.as_ref().ok_or("spec.pipeline.influxdb: the export stage needs an InfluxDB target")?;
    Ok(ValidPipeline { pipeline: p, kafka, influxdb })
}
