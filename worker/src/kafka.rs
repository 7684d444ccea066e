//! Kafka clients configured from the pipeline, and keyed sends whose
//! delivery can be awaited later (so a stage can pipeline many messages and
//! still act only once Kafka has accepted them).

use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use millrace_config::KafkaConfig;

/// Base client settings: bootstrap servers plus the pipeline's extra
/// properties (which may override anything here).
/// A client's settings: the pipeline's properties and, with SASL, the
/// username and password from `MILLRACE_KAFKA_USERNAME`/`_PASSWORD` (or
/// `..._FILE`). Missing credentials are left to librdkafka, which names the
/// missing `sasl.username` when the client is made.
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::from_iter(kafka.client_properties());
    if kafka.security.as_ref().is_some_and(|s| s.protocol.uses_sasl()) {
        match crate::credentials::from_env("KAFKA") {
            Ok(Some(c)) => {
                config.set("sasl.username", c.username).set("sasl.password", c.password);
            }
            Ok(None) => tracing::warn!("Kafka asks for SASL, but MILLRACE_KAFKA_USERNAME and MILLRACE_KAFKA_PASSWORD are not set"),
            Err(e) => tracing::warn!(error = %e, "cannot read the Kafka credentials"),
        }
    }
    config
}

/// An idempotent producer: `acks=all`, no duplicates from retries, small
/// batches lingering a few milliseconds for throughput.
pub fn idempotent_producer(kafka: &KafkaConfig, client_id: &str) -> Result<FutureProducer, KafkaError> {
    let mut c = ClientConfig::new();
    c.set("client.id", client_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "300000");
    let mut merged = client_config(kafka);
    for (k, v) in c.config_map() {
        if !kafka.properties.contains_key(k) {
            merged.set(k, v);
        }
    }
    merged.create()
}

/// A send whose delivery is awaited later. Resolves to an error message
/// that names the topic when Kafka does not accept the record.
pub type Delivery = BoxFuture<'static, Result<(), String>>;

/// Enqueues a keyed record, waiting (briefly, repeatedly) while the local
/// queue is full, and returns its delivery.
pub async fn send(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) -> Delivery {
    let mut record = FutureRecord::to(topic).key(key).payload(payload);
    loop {
        match producer.send_result(record) {
            Ok(delivery) => {
                let topic = topic.to_string();
                return async move {
                    match delivery.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((e, _))) => Err(format!("Kafka did not accept a record for topic {topic}: {e}")),
                        Err(_) => Err(format!("the producer for topic {topic} shut down before delivery")),
                    }
                }
                .boxed();
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((e, _)) => {
                let msg = format!("cannot enqueue a record for topic {topic}: {e}");
                return async move { Err(msg) }.boxed();
            }
        }
    }
}

/// Enqueues a record on a (transactional) threaded producer, waiting while
/// its local queue is full; an error names the topic.
pub fn enqueue(producer: &rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext>, mut record: rdkafka::producer::BaseRecord<'_, str, [u8]>) -> anyhow::Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, r)) => anyhow::bail!("cannot produce to {}: {e}", r.topic),
        }
    }
}

/// Runs a blocking Kafka call again while it fails, for at most `within`:
/// a broker that just went away (its handle destroyed, its coordinator
/// moving) fails the first calls. `what` names the call in the log and in
/// the final error.
pub fn retried<T>(what: &str, within: Duration, mut call: impl FnMut() -> Result<T, KafkaError>) -> anyhow::Result<T> {
    let started = std::time::Instant::now();
    loop {
        match call() {
            Ok(v) => return Ok(v),
            Err(e) if started.elapsed() < within => {
                tracing::warn!(error = %e, "cannot {what} yet; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => anyhow::bail!("cannot {what}: {e}"),
        }
    }
}

