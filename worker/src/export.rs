//! The export stage: narrow and joined records out to InfluxDB 1.x in
//! batches.
//!
//! A batch is written when it is full or its oldest point has waited the
//! flush interval; while InfluxDB is away the batch is retried with backoff
//! and nothing new is read (back-pressure). On Kafka, offsets are committed
//! only after the batch is written, so a crash replays at most one batch,
//! and a replayed point overwrites itself (time plus tags identify it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use millrace_config::{ExportStream, InfluxDbTarget, KafkaConfig};
use millrace_join::record::NarrowRecord;

use crate::dead_letter::{DeadLetter, DeadLetterSink, Reason};
use crate::health::Health;
use crate::influx::{InfluxClient, InfluxError};
use crate::line_protocol::PointWriter;

/// Longest wait between write attempts while InfluxDB is unavailable.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A batch of points in line protocol.
pub struct Batch {
    writer: PointWriter,
    body: String,
    points: usize,
    started: Option<Instant>,
}

impl Batch {
    pub fn new(target: &InfluxDbTarget) -> Self {
        Self { writer: PointWriter::new(&target.measurement, &target.tags), body: String::new(), points: 0, started: None }
    }

    /// Adds a record; its time must already be known in nanoseconds.
    pub fn add(&mut self, thing: &str, quantity: &str, result: f64, time_nanos: i64) {
        self.started.get_or_insert_with(Instant::now);
        self.writer.write(&mut self.body, thing, quantity, result, time_nanos);
        self.points += 1;
    }

    pub fn len(&self) -> usize {
        self.points
    }

    pub fn is_empty(&self) -> bool {
        self.points == 0
    }

    /// How long the oldest point has waited.
    pub fn age(&self) -> Duration {
        self.started.map(|s| s.elapsed()).unwrap_or_default()
    }

    fn take(&mut self) -> String {
        self.points = 0;
        self.started = None;
        std::mem::take(&mut self.body)
    }
}

/// Writes batches to InfluxDB, retrying while it is unavailable.
pub struct Exporter {
    client: InfluxClient,
    health: Arc<Health>,
}

impl Exporter {
    pub fn new(client: InfluxClient, health: Arc<Health>) -> Self {
        Self { client, health }
    }

    /// Creates the database, retrying until InfluxDB answers or `shutdown`.
    pub async fn prepare(&self, shutdown: &CancellationToken) -> Result<(), InfluxError> {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.client.ensure_database().await {
                Ok(()) => return Ok(()),
                // Unreachable, a login not (yet) known, or a database only
                // an admin can create: wait (not ready) for someone to fix
                // it instead of exiting into a crash loop.
                Err(e) if (e.is_retryable() || e.needs_an_admin()) && !shutdown.is_cancelled() => {
                    self.health.metrics.stage("export").error("influxdb_unavailable");
                    tracing::warn!(error = %e, "InfluxDB not ready for writing yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes the batch (if any). Retries until written; gives up only on a
    /// refusal (bad data or credentials) or on shutdown after a last try.
    pub async fn flush(&self, batch: &mut Batch, shutdown: &CancellationToken) -> Result<(), InfluxError> {
        if batch.is_empty() {
            return Ok(());
        }
        let points = batch.len();
        let body = batch.take();
        let metrics = self.health.metrics.stage("export");
        let health = &self.health;
        let result = self
            .client
            .write_with_retry(
                body,
                MAX_BACKOFF,
                |e| {
                    metrics.error("influxdb_unavailable");
                    health.set_ready(false);
                    tracing::warn!(error = %e, points, "write to InfluxDB failed; retrying");
                },
                || shutdown.is_cancelled(),
            )
            .await;
        if result.is_ok() {
            health.set_ready(true);
            metrics.batch(points);
            metrics.record_out(points as u64);
        }
        result
    }
}

/// Embedded mode: points arrive on a channel; runs until the channel closes
/// (the upstream stages finished) and the last batch is written.
pub async fn run_from_channel(
    target: &InfluxDbTarget,
    exporter: Exporter,
    mut records: mpsc::Receiver<Vec<NarrowRecord>>,
    dead_letters: DeadLetterSink,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    exporter.prepare(&shutdown).await?;
    let metrics = exporter.health.metrics.stage("export");
    let mut batch = Batch::new(target);
    let mut tick = tokio::time::interval(target.flush_interval);
    loop {
        tokio::select! {
            received = records.recv() => match received {
                Some(rs) => {
                    metrics.record_in(rs.len() as u64);
                    for r in rs {
                        add_record(&mut batch, &r, "embedded", &dead_letters, &metrics).await;
                    }
                    if batch.len() >= target.batch_size {
                        exporter.flush(&mut batch, &shutdown).await?;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if batch.age() >= target.flush_interval {
                    exporter.flush(&mut batch, &shutdown).await?;
                }
            }
        }
    }
    exporter.flush(&mut batch, &shutdown).await?;
    Ok(())
}

async fn add_record(batch: &mut Batch, r: &NarrowRecord, source: &str, dead_letters: &DeadLetterSink, metrics: &crate::metrics::StageMetrics<'_>) {
    match r.time_nanos() {
        Ok(t) if r.result.is_finite() => batch.add(&r.thing, &r.quantity, r.result, t),
        Ok(_) => {
            metrics.dead_letter(&Reason::NonFiniteValue);
            let bytes = serde_json::to_vec(r).unwrap_or_default();
            let _ = dead_letters.send(&DeadLetter::new(Reason::NonFiniteValue, "result is not finite", source, &bytes)).await.await;
        }
        Err(e) => {
            metrics.dead_letter(&Reason::BadTimestamp);
            let bytes = serde_json::to_vec(r).unwrap_or_default();
            let _ = dead_letters.send(&DeadLetter::new(Reason::BadTimestamp, e.to_string(), source, &bytes)).await.await;
        }
    }
}

/// The export stage on Kafka: consumes the configured topics in a consumer
/// group and commits offsets after each written batch.
pub async fn run_from_kafka(
    kafka: &KafkaConfig,
    target: &InfluxDbTarget,
    exporter: Exporter,
    dead_letters: DeadLetterSink,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let topics: Vec<&str> = target
        .export
        .iter()
        .map(|s| match s {
            ExportStream::Raw => kafka.topics.raw_name(),
            ExportStream::Joined => kafka.topics.joined_name(),
        })
        .collect();
    let consumer: StreamConsumer = crate::kafka::client_config(kafka)
        .set("group.id", format!("{}-export", kafka.group_id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()?;
    consumer.subscribe(&topics)?;
    exporter.prepare(&shutdown).await?;
    let metrics = exporter.health.metrics.stage("export");
    let mut batch = Batch::new(target);
    let mut tick = tokio::time::interval(target.flush_interval);
    exporter.health.set_ready(true);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            message = consumer.recv() => {
                let m = match message {
                    Ok(m) => m,
                    // A fatal consumer error leaves a consumer that never
                    // delivers again: stop, so that the stage is restarted.
                    Err(e @ rdkafka::error::KafkaError::MessageConsumptionFatal(_)) => {
                        metrics.error("kafka_consume");
                        anyhow::bail!("the Kafka consumer failed for good ({e}): the export stage stops to be restarted");
                    }
                    Err(e) => {
                        metrics.error("kafka_consume");
                        tracing::warn!(error = %e, "Kafka consume failed");
                        continue;
                    }
                };
                metrics.record_in(1);
                let source = format!("kafka:{}/{}/{}", m.topic(), m.partition(), m.offset());
                let payload = m.payload().unwrap_or_default();
                match serde_json::from_slice::<NarrowRecord>(payload) {
                    Ok(r) => add_record(&mut batch, &r, &source, &dead_letters, &metrics).await,
                    Err(e) => {
                        metrics.dead_letter(&Reason::MalformedJson);
                        let _ = dead_letters.send(&DeadLetter::new(Reason::MalformedJson, e.to_string(), source, payload)).await.await;
                    }
                }
                if batch.len() >= target.batch_size {
                    exporter.flush(&mut batch, &shutdown).await?;
                    commit_consumed(&consumer, CommitMode::Async)?;
                }
            }
            _ = tick.tick() => {
                if !batch.is_empty() && batch.age() >= target.flush_interval {
                    exporter.flush(&mut batch, &shutdown).await?;
                    commit_consumed(&consumer, CommitMode::Async)?;
                }
            }
        }
    }
    exporter.flush(&mut batch, &shutdown).await?;
    commit_consumed(&consumer, CommitMode::Sync)?;
    Ok(())
}

/// Commits what was consumed; nothing new since the last commit is fine.
fn commit_consumed(consumer: &StreamConsumer, mode: CommitMode) -> Result<(), rdkafka::error::KafkaError> {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;
    match consumer.commit_consumer_state(mode) {
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
        other => other,
    }
}
