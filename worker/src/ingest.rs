//! The ingest stage: MQTT in, narrow records out.
//!
//! Each wide message is split into narrow records, which go to the raw
//! topic keyed by machine (or, embedded, to the join). The MQTT message is
//! acknowledged only once all its records (and its dead letter, if any) are
//! accepted downstream, in arrival order, so a crash loses nothing: the
//! broker redelivers what was not acknowledged. Messages in flight are
//! bounded, which pushes back on the broker when downstream is slow.
//! Acknowledgements are written in batches by `mqtt_ack`, not through
//! rumqttc's request channel (which cannot keep up with a flood).

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use rdkafka::producer::FutureProducer;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use millrace_config::{MqttSource, PipelineConfig};
use millrace_join::record::NarrowRecord;

use crate::credentials::Credentials;
use crate::dead_letter::{DeadLetter, DeadLetterSink};
use crate::health::Health;
use crate::kafka::{self, Delivery};
use crate::mqtt_ack::{AckBatch, Connection};
use crate::wide::Splitter;

/// MQTT's own limit on a packet (256 MiB).
const MAX_MQTT_PACKET: usize = 268_435_455;

/// Largest number of MQTT messages between arrival and acknowledgement.
const MAX_IN_FLIGHT: usize = 20_000;

/// Where the records of the ingest stage go.
pub enum RecordOutput {
    /// The raw topic, keyed by `thing`.
    Kafka { producer: FutureProducer, topic: String },
    /// A bounded channel to the next stage in the same process.
    Channel(mpsc::Sender<Vec<NarrowRecord>>),
}

impl RecordOutput {
    async fn send(&self, records: Vec<NarrowRecord>) -> Delivery {
        match self {
            RecordOutput::Kafka { producer, topic } => {
                let mut deliveries = Vec::with_capacity(records.len());
                for r in &records {
                    let value = serde_json::to_vec(r).expect("a narrow record always serializes");
                    deliveries.push(kafka::send(producer, topic, &r.thing, &value).await);
                }
                async move {
                    for d in deliveries {
                        d.await?;
                    }
                    Ok(())
                }
                .boxed()
            }
            RecordOutput::Channel(tx) => {
                // Waiting for room here is the back-pressure of embedded mode.
                let result = tx.send(records).await.map_err(|_| "the join stage has stopped".to_string());
                async move { result }.boxed()
            }
        }
    }
}

/// The subscription filters, as shared subscriptions when a group is set.
pub fn subscription_filters(mqtt: &MqttSource) -> Vec<String> {
    mqtt.topics
        .iter()
        .map(|t| match mqtt.share_group() {
            "" => t.clone(),
            group => format!("$share/{group}/{t}"),
        })
        .collect()
}

pub fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

pub use crate::mqtt_session::client_id;

/// What a session is opened for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// This instance's own session: subscribe and ingest until shutdown.
    Serve,
    /// A retired instance's session: unsubscribe, ingest what it still
    /// holds, stop once nothing more comes.
    Drain,
}

/// A drained session is done once nothing came for this long.
const DRAIN_QUIET: Duration = Duration::from_secs(2);
/// A retired session the broker does not let us open within this time is
/// left for the next start.
const DRAIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs ingest until `shutdown`, then acknowledges what is in flight.
/// Ordinal 0 of a scaled-down stage also drains and removes the sessions
/// of the instances that are gone (see `mqtt_session`).
pub async fn run(
    config: &PipelineConfig,
    credentials: Option<Credentials>,
    output: RecordOutput,
    dead_letters: DeadLetterSink,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let ingest = Ingest { config, credentials, output, dead_letters, health, shutdown };
    // The retired sessions are drained beside this instance's own, once
    // the Pods scaled away have surely stopped: one still running would
    // take its session back (and subscribe it again) after the drain.
    let drains = async {
        let retired = crate::mqtt_session::retired_from_env(config.mqtt.client_id());
        if retired.is_empty() {
            return Ok(());
        }
        tokio::select! {
            _ = ingest.shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(crate::mqtt_session::drain_delay()) => {}
        }
        for retired in retired {
            if ingest.shutdown.is_cancelled() {
                break;
            }
            tracing::info!(client_id = %retired, "draining the MQTT session of an instance that was scaled away");
            let Some(options) = ingest.session(&retired, Mode::Drain).await? else {
                // Not emptied (stopped, or the broker would not open it): kept.
                continue;
            };
            match crate::mqtt_session::forget(options).await {
                Ok(()) => tracing::info!(client_id = %retired, "retired MQTT session drained and removed"),
                Err(e) => tracing::warn!(client_id = %retired, error = %e, "cannot remove a retired MQTT session; the next start tries again"),
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    let own = client_id(config.mqtt.client_id());
    let serve = ingest.session(&own, Mode::Serve);
    // A failure of either ends both: the process restarts.
    tokio::try_join!(serve, drains)?;
    Ok(())
}

/// What every session of the stage shares.
struct Ingest<'a> {
    config: &'a PipelineConfig,
    credentials: Option<Credentials>,
    output: RecordOutput,
    dead_letters: DeadLetterSink,
    health: Arc<Health>,
    shutdown: CancellationToken,
}

impl Ingest<'_> {
    /// One persistent session: `Serve` until shutdown, or `Drain` until the
    /// session is empty. Returns its options once a drained session is empty
    /// (to remove it); None when a drain stopped before.
    async fn session(&self, client_id: &str, mode: Mode) -> anyhow::Result<Option<MqttOptions>> {
        let Ingest { config, health, shutdown, .. } = self;
        let splitter = Splitter::new(&config.payload, config.mqtt.max_message_bytes)?;
        let options = self.mqtt_options(client_id)?;
        let (client, mut events) = AsyncClient::new(options.clone(), 1024);
        let filters = subscription_filters(&config.mqtt);
        let qos = qos(config.mqtt.qos);
        let metrics = health.metrics.stage("ingest");

        let mut pending: FuturesOrdered<futures::future::BoxFuture<'static, Delivered>> = FuturesOrdered::new();
        let mut connection = Connection::default();
        let mut acks = AckBatch::default();
        let mut reconnect_backoff = Duration::from_millis(100);
        let mut failure: Option<String> = None;
        let started = std::time::Instant::now();
        let mut last_message: Option<std::time::Instant> = None;
        let mut drained = false;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(200)), if mode == Mode::Drain => {
                    match last_message {
                        Some(at) if pending.is_empty() && at.elapsed() >= DRAIN_QUIET => {
                            drained = true;
                            break;
                        }
                        None if started.elapsed() >= DRAIN_CONNECT_TIMEOUT => {
                            tracing::warn!(client_id, "cannot open a retired MQTT session; the next start tries again");
                            break;
                        }
                        _ => {}
                    }
                }
                Some(delivered) = pending.next(), if !pending.is_empty() => {
                    // Batch whatever else is ready: one flush for all of them.
                    let mut ready = std::iter::once(delivered).chain(std::iter::from_fn(|| pending.next().now_or_never().flatten()));
                    if let Err(e) = ready.try_for_each(|d| settle(&mut acks, d, connection)) {
                        failure = Some(e);
                        break;
                    }
                }
                event = events.poll(), if pending.len() < MAX_IN_FLIGHT => match event {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) if mode == Mode::Drain => {
                        if !ack.session_present {
                            // Nothing was kept for it (already removed, or a
                            // broker without persistence restarted).
                            drained = true;
                            break;
                        }
                        connection = connection.next();
                        last_message = Some(std::time::Instant::now());
                        // No new messages for a session nobody will open again;
                        // what it holds still comes.
                        for f in &filters {
                            if let Err(e) = client.try_unsubscribe(f.as_str()) {
                                tracing::warn!(filter = %f, error = %e, "cannot unsubscribe a retired session");
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connection = connection.next();
                        reconnect_backoff = Duration::from_millis(100);
                        // A persistent session keeps subscriptions, but a broker
                        // that lost its state does not: subscribe every time.
                        for f in &filters {
                            if let Err(e) = client.try_subscribe(f.as_str(), qos) {
                                tracing::warn!(filter = %f, error = %e, "cannot subscribe");
                            }
                        }
                        tracing::info!(filters = ?filters, "connected to MQTT and subscribed");
                        health.set_ready(true);
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        metrics.record_in(1);
                        if mode == Mode::Drain {
                            last_message = Some(std::time::Instant::now());
                        }
                        pending.push_back(self.accept(publish, connection, &splitter, &metrics).await);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if mode == Mode::Serve {
                            health.set_ready(false);
                        }
                        metrics.error("mqtt_connection");
                        let url = &config.mqtt.url;
                        tracing::warn!(%url, error = %e, retry_in = ?reconnect_backoff, "MQTT connection lost; reconnecting");
                        // Read the certificates again: a rotated Secret (or
                        // a fixed CA) takes effect on the next try.
                        match crate::mqtt_broker::transport(url, config.mqtt.tls.as_ref()) {
                            Ok(transport) => {
                                events.mqtt_options.set_transport(transport);
                            }
                            Err(e) => tracing::warn!(%url, error = %e, "cannot read the MQTT TLS files; trying the old ones"),
                        }
                        tokio::time::sleep(reconnect_backoff).await;
                        reconnect_backoff = (reconnect_backoff * 2).min(Duration::from_secs(5));
                    }
                },
            }
            if !acks.is_empty() {
                write_acks(&mut acks, &mut events, &metrics).await;
            }
        }
        if mode == Mode::Serve {
            health.set_ready(false);
        }
        if failure.is_none() {
            failure = settle_pending(&mut pending, &mut acks, connection).await.err();
        }
        close(&client, &mut events, &mut acks, &metrics).await;
        match failure {
            Some(e) => anyhow::bail!("ingest stopped: {e}"),
            None if mode == Mode::Serve || drained => Ok(Some(options)),
            None => Ok(None),
        }
    }
}

impl Ingest<'_> {
    /// The options of a persistent session named `client_id`.
    fn mqtt_options(&self, client_id: &str) -> anyhow::Result<MqttOptions> {
        let mut options = crate::mqtt_broker::options(client_id, &self.config.mqtt.url, self.config.mqtt.tls.as_ref())?;
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(false)
            .set_manual_acks(true)
            // The transport takes anything MQTT allows, so that an oversized
            // message becomes a dead letter instead of a dropped connection.
            .set_max_packet_size(MAX_MQTT_PACKET, MAX_MQTT_PACKET)
            .set_request_channel_capacity(MAX_IN_FLIGHT);
        if let Some(c) = &self.credentials {
            options.set_credentials(c.username.clone(), c.password.clone());
        }
        Ok(options)
    }

    /// Splits a message and sends its records and dead letter downstream;
    /// the returned future says whether downstream took them all.
    async fn accept(
        &self,
        publish: Publish,
        arrived_on: Connection,
        splitter: &Splitter,
        metrics: &crate::metrics::StageMetrics<'_>,
    ) -> futures::future::BoxFuture<'static, Delivered> {
        let split = splitter.split(&publish.payload);
        let mut deliveries = Vec::with_capacity(2);
        if let Some(problem) = split.problem {
            metrics.dead_letter(&problem.reason);
            let letter = DeadLetter::new(problem.reason, problem.detail, format!("mqtt:{}", publish.topic), &publish.payload);
            deliveries.push(self.dead_letters.send(&letter).await);
        }
        if !split.records.is_empty() {
            metrics.record_out(split.records.len() as u64);
            deliveries.push(self.output.send(split.records).await);
        }
        Box::pin(async move {
            for d in deliveries {
                if let Err(e) = d.await {
                    return (publish, arrived_on, Err(e));
                }
            }
            (publish, arrived_on, Ok(()))
        })
    }
}

/// Graceful stop: waits for every message in flight and queues the
/// acknowledgement of each that downstream took; stops at the first it did not.
async fn settle_pending(
    pending: &mut FuturesOrdered<futures::future::BoxFuture<'static, Delivered>>,
    acks: &mut AckBatch,
    current: Connection,
) -> Result<(), String> {
    while let Some(delivered) = pending.next().await {
        settle(acks, delivered, current)?;
    }
    Ok(())
}

/// Writes the last acknowledgements and disconnects, so that the broker
/// reads them before the connection closes.
async fn close(client: &AsyncClient, events: &mut rumqttc::EventLoop, acks: &mut AckBatch, metrics: &crate::metrics::StageMetrics<'_>) {
    if !acks.is_empty() {
        write_acks(acks, events, metrics).await;
    }
    if tokio::time::timeout(Duration::from_secs(5), crate::mqtt_session::disconnect(client, events)).await.is_err() {
        tracing::warn!("the MQTT broker did not close the connection within 5 s of DISCONNECT; messages whose acknowledgement it did not read are redelivered on the next connection");
    }
    if acks.skipped_stale > 0 {
        tracing::info!(messages = acks.skipped_stale, "acknowledgements skipped for messages of an earlier connection; the broker redelivers those");
    }
}

/// A message, the connection it came on, and whether downstream took all
/// of its records.
type Delivered = (Publish, Connection, Result<(), String>);

/// Queues the acknowledgement of a message whose records downstream took,
/// or returns why it did not: then nothing is acknowledged, and the broker
/// redelivers the message after a restart.
fn settle(acks: &mut AckBatch, (publish, arrived_on, result): Delivered, current: Connection) -> Result<(), String> {
    result?;
    acks.push(&publish, arrived_on, current);
    Ok(())
}

async fn write_acks(acks: &mut AckBatch, events: &mut rumqttc::EventLoop, metrics: &crate::metrics::StageMetrics<'_>) {
    if let Err(e) = acks.write(events).await {
        // The connection is gone: those messages are redelivered on the next.
        metrics.error("mqtt_connection");
        tracing::warn!(error = %e, "cannot write MQTT acknowledgements; reconnecting");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_subscriptions_wrap_every_filter() {
        let mut m = MqttSource { topics: vec!["machines/#".into(), "plant/+/state".into()], ..Default::default() };
        assert_eq!(subscription_filters(&m), vec!["$share/millrace/machines/#", "$share/millrace/plant/+/state"]);
        m.share_group = Some(String::new());
        assert_eq!(subscription_filters(&m), vec!["machines/#", "plant/+/state"]);
    }
}
