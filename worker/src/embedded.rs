//! Embedded mode: ingest, join and export in one process, without Kafka,
//! linked by bounded channels. A full channel makes the stage before it
//! wait, down to MQTT, which then holds messages at the broker.
//!
//! What is in memory when the process dies is not acknowledged to MQTT only
//! until the join has it; embedded mode is for a single machine and for
//! trying Millrace out. Production pipelines run the stages on Kafka.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use millrace_config::{ExportStream, PipelineConfig};
use millrace_join::joiner::{Event, Input, Joiner};
use millrace_join::record::NarrowRecord;

use crate::dead_letter::{DeadLetter, DeadLetterSink, Reason};
use crate::export::{self, Exporter};
use crate::health::Health;
use crate::influx::InfluxClient;
use crate::ingest::{self, RecordOutput};

/// Batches (one per MQTT message) between two stages.
const CHANNEL_CAPACITY: usize = 4096;

/// Runs the whole pipeline until `shutdown`, then drains it: ingest stops
/// reading, the join finishes what it has, export writes the last batch.
pub async fn run(config: &PipelineConfig, health: Arc<Health>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let target = config
        .influxdb
        .clone()
        .ok_or_else(|| anyhow::anyhow!("influxdb: embedded mode needs an InfluxDB target to write to"))?;
    let dead_letter_path = PathBuf::from(config.dead_letter.file.clone().unwrap_or_else(|| "dead-letters.jsonl".into()));
    let dead_letters = DeadLetterSink::file(&dead_letter_path)
        .map_err(|e| anyhow::anyhow!("deadLetter.file: cannot open {}: {e}", dead_letter_path.display()))?;
    let joiner = Joiner::new(&config.joins)?;
    let influx = InfluxClient::new(&target, crate::credentials::from_env("INFLUXDB")?)?;
    let mqtt_credentials = crate::credentials::from_env("MQTT")?;

    let (raw_tx, raw_rx) = mpsc::channel::<Vec<NarrowRecord>>(CHANNEL_CAPACITY);
    let (points_tx, points_rx) = mpsc::channel::<Vec<NarrowRecord>>(CHANNEL_CAPACITY);

    // Ingest stops on shutdown; the others stop when their input closes, so
    // that everything read is also written.
    let ingest_task = {
        let (config, health, dead_letters, shutdown) = (config.clone(), health.clone(), dead_letters.clone(), shutdown.clone());
        tokio::spawn(async move {
            ingest::run(&config, mqtt_credentials, RecordOutput::Channel(raw_tx), dead_letters, health, shutdown).await
        })
    };
    let join_task = {
        let (health, dead_letters) = (health.clone(), dead_letters.clone());
        let export_raw = target.export.contains(&ExportStream::Raw);
        let export_joined = target.export.contains(&ExportStream::Joined);
        tokio::spawn(join_stage(joiner, raw_rx, points_tx, dead_letters, health, export_raw, export_joined))
    };
    let export_task = {
        let exporter = Exporter::new(influx, health.clone());
        let never = CancellationToken::new();
        tokio::spawn(async move { export::run_from_channel(&target, exporter, points_rx, dead_letters, never).await })
    };

    let ingest_result = ingest_task.await?;
    join_task.await??;
    export_task.await??;
    ingest_result
}

async fn join_stage(
    mut joiner: Joiner,
    mut input: mpsc::Receiver<Vec<NarrowRecord>>,
    output: mpsc::Sender<Vec<NarrowRecord>>,
    dead_letters: DeadLetterSink,
    health: Arc<Health>,
    export_raw: bool,
    export_joined: bool,
) -> anyhow::Result<()> {
    let metrics = health.metrics.stage("join");
    let mut seq = 0u64;
    while let Some(records) = input.recv().await {
        metrics.record_in(records.len() as u64);
        let mut out = Vec::with_capacity(records.len() * 2);
        let mut rejected = Vec::new();
        for r in &records {
            seq += 1;
            let (Ok(time), Ok(raw)) = (r.time_nanos(), serde_json::value::to_raw_value(&r.phenomenon_time)) else {
                continue; // ingest only forwards records with readable times
            };
            let input = Input { thing: &r.thing, quantity: &r.quantity, time, time_raw: &raw, result: r.result, seq };
            let expired_before = joiner.expired_records();
            joiner.push(&input, &mut |event| match event {
                Event::Joined(j) => {
                    if j.expired {
                        health.metrics.join_expired_pairs.inc();
                    }
                    if export_joined {
                        out.push(NarrowRecord {
                            thing: j.thing.to_string(),
                            quantity: j.quantity.to_string(),
                            phenomenon_time: serde_json::to_value(&j.time_value).unwrap_or_default(),
                            result: j.result,
                        });
                    }
                }
                Event::Rejected(why) => rejected.push((why, serde_json::to_vec(r).unwrap_or_default())),
            });
            health.metrics.join_expired_records.inc_by(joiner.expired_records() - expired_before);
        }
        metrics.record_out(out.len() as u64);
        for (why, bytes) in rejected {
            let reason = Reason::from(&why);
            metrics.dead_letter(&reason);
            if let Err(e) = dead_letters.send(&DeadLetter::new(reason, why.to_string(), "join", &bytes)).await.await {
                tracing::error!(error = %e, "cannot store a dead letter");
            }
        }
        if export_raw {
            out.extend(records);
        }
        if !out.is_empty() && output.send(out).await.is_err() {
            anyhow::bail!("the export stage has stopped");
        }
    }
    Ok(())
}
