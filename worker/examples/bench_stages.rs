//! Throughput of the ingest and export stages against real servers on this
//! machine (run by `scripts/bench-worker.sh`, release build):
//!
//! - ingest: generated wide messages (four quantities each) published to
//!   Mosquitto at full speed, split and produced to a Kafka topic (Apache Kafka 4.4)
//!   by the ingest stage, acknowledged after Kafka accepted them;
//! - export: narrow records written to InfluxDB 1.x in batches;
//! - join: narrow records already in the raw topic joined and produced to
//!   the joined topic inside transactions committed every 100 ms;
//! - tls: ingest and join over plaintext against over TLS (mqtts with a
//!   client certificate, Kafka SASL_SSL), by turns in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use millrace_testkit::{InfluxDb, KafkaBroker, Mosquitto};
use millrace_config::{InfluxDbTarget, KafkaConfig, PipelineConfig, TlsFiles};
use millrace_worker::credentials::Credentials;
use millrace_worker::dead_letter::DeadLetterSink;
use millrace_worker::export::{Batch, Exporter};
use millrace_worker::health::Health;
use millrace_worker::influx::InfluxClient;
use millrace_worker::simulate::{self, Options, Source};
use millrace_worker::{ingest, kafka};
use tokio_util::sync::CancellationToken;

fn counter(health: &Health, name: &str) -> f64 {
    health.metrics.encode().lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

/// What one run of the ingest stage measured.
struct IngestRun {
    elapsed: Duration,
    records: f64,
    redelivered: f64,
    publisher: simulate::Summary,
}

/// The ingest stage between `mqtt_url` and `kafka` (topics bench.raw and
/// bench.dead) for `messages` generated wide messages (four quantities
/// each) published at full speed; done when Kafka accepted every record.
async fn ingest_once(
    mqtt_url: &str,
    mqtt_tls: Option<TlsFiles>,
    login: Option<Credentials>,
    kafka_config: &KafkaConfig,
    messages: u64,
) -> anyhow::Result<IngestRun> {
    let mut config = PipelineConfig::default();
    config.mqtt.url = mqtt_url.to_string();
    config.mqtt.tls = mqtt_tls.clone();
    config.mqtt.share_group = Some(String::new());
    let producer = kafka::idempotent_producer(kafka_config, "bench-ingest")?;
    // One MQTT session for both runs of the stage below.
    config.mqtt.client_id = Some(format!("bench-{}-{:08x}", std::process::id(), rand::random::<u32>()));
    let start_ingest = |health: Arc<Health>, shutdown: CancellationToken| {
        let (config, producer, login) = (config.clone(), producer.clone(), login.clone());
        tokio::spawn(async move {
            let output = ingest::RecordOutput::Kafka { producer: producer.clone(), topic: "bench.raw".into() };
            let dead = DeadLetterSink::Kafka { producer, topic: "bench.dead".into() };
            ingest::run(&config, login, output, dead, health, shutdown).await
        })
    };
    let health = Arc::new(Health::default());
    let shutdown = CancellationToken::new();
    let task = start_ingest(health.clone(), shutdown.clone());
    while !health.is_ready() {
        anyhow::ensure!(!task.is_finished(), "the ingest stage stopped before it was ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = Instant::now();
    let publisher = simulate::run(
        Source::Generate { machines: 100, interval: Duration::from_millis(10) },
        Options {
            url: mqtt_url.to_string(),
            tls: mqtt_tls,
            topic: "machines/{thing}".into(),
            qos: 1,
            // 0: as fast as the publisher can; BENCH_RATE paces it.
            rate: std::env::var("BENCH_RATE").ok().and_then(|v| v.parse().ok()).unwrap_or(0),
            count: Some(messages),
            duration: None,
            repeat: false,
            retime: false,
            format: Default::default(),
            progress: false,
        },
    )
    .await?;
    // Done when every message's records were accepted by Kafka (ingest acks
    // MQTT only then; records_out counts records handed to the producer).
    let (mut seen, mut since) = (0.0, Instant::now());
    loop {
        let now = counter(&health, "millrace_records_in_total{stage=\"ingest\"}");
        if now >= messages as f64 {
            break;
        }
        if now > seen {
            (seen, since) = (now, Instant::now());
        }
        anyhow::ensure!(since.elapsed() < Duration::from_secs(20), "ingest stalled: {now} of {messages} messages arrived, none for 20 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    use rdkafka::producer::Producer;
    producer.flush(Duration::from_secs(60))?;
    let elapsed = start.elapsed();
    shutdown.cancel();
    task.await??;
    let records = counter(&health, "millrace_records_out_total{stage=\"ingest\"}");
    // Were all acknowledgements written? The same session again: the broker
    // redelivers whatever it still holds unacknowledged.
    let again = Arc::new(Health::default());
    let stop_again = CancellationToken::new();
    let second = start_ingest(again.clone(), stop_again.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_again.cancel();
    second.await??;
    let redelivered = counter(&again, "millrace_records_in_total{stage=\"ingest\"}");
    Ok(IngestRun { elapsed, records, redelivered, publisher })
}

fn plain_kafka(bootstrap: String) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: bootstrap,
        group_id: Some("bench".into()),
        topics: millrace_config::Topics {
            raw: millrace_config::TopicSpec::named("bench.raw"),
            joined: millrace_config::TopicSpec::named("bench.joined"),
            dead_letter: millrace_config::TopicSpec::named("bench.dead"),
            join_state: None,
        },
        transaction_interval: Duration::from_millis(100),
        security: None,
        properties: Default::default(),
        replay_limit: 100_000,
    }
}

async fn bench_ingest(messages: u64) -> anyhow::Result<()> {
    let mqtt = Mosquitto::start().map_err(|e| anyhow::anyhow!("{e}"))?;
    let broker = KafkaBroker::start().map_err(|e| anyhow::anyhow!("{e}"))?;
    broker.create_topic("bench.raw", 6)?;
    broker.create_topic("bench.dead", 1)?;
    let kafka_config = plain_kafka(broker.bootstrap_servers());
    let IngestRun { elapsed, records, redelivered, publisher: summary } = ingest_once(&mqtt.url(), None, None, &kafka_config, messages).await?;
    println!(
        "ingest: {messages} wide messages ({records} narrow records) MQTT -> Kafka in {:.2} s: {:.0} messages/s, {:.0} records/s; {redelivered} redelivered to the same session afterwards (unacknowledged) (publisher alone: {summary})",
        elapsed.as_secs_f64(),
        messages as f64 / elapsed.as_secs_f64(),
        records / elapsed.as_secs_f64()
    );
    // The ceiling: the same idempotent producer (same settings) producing as
    // many narrow records of the same shape straight to Kafka, no MQTT.
    broker.create_topic("bench.ceiling", 6)?;
    let ceiling = kafka::idempotent_producer(&kafka_config, "bench-ceiling")?;
    let total = records as usize;
    let start = Instant::now();
    let mut deliveries = Vec::with_capacity(total);
    for i in 0..total {
        let thing = format!("M{:03}", i % 100);
        let value = format!(
            "{{\"thing\":\"{thing}\",\"quantity\":\"actSpeed_C11\",\"phenomenonTime\":\"2026-12-02T10:00:00.{:03}Z\",\"result\":{},\"id\":\"{i}\"}}",
            i % 1000,
            (i % 997) as f64 * 0.5
        );
        let mut record = rdkafka::producer::FutureRecord::to("bench.ceiling").key(&thing).payload(&value);
        loop {
            match ceiling.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((_, r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    let mut acknowledged = 0usize;
    for delivery in deliveries {
        if matches!(delivery.await, Ok(Ok(_))) {
            acknowledged += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "ceiling, the same idempotent producer sending {total} such records straight to Kafka: {elapsed:.2} s: {:.0} records/s ({acknowledged} acknowledged)",
        total as f64 / elapsed
    );
    Ok(())
}

async fn bench_export(points: usize) -> anyhow::Result<()> {
    let influx = InfluxDb::start().map_err(|e| anyhow::anyhow!("{e}"))?;
    let target = InfluxDbTarget {
        url: influx.url(),
        database: "bench".into(),
        measurement: "machine".into(),
        tags: Default::default(),
        export: vec![],
        batch_size: 5000,
        flush_interval: Duration::from_millis(200),
        credentials: None,
        tls: None,
    };
    let health = Arc::new(Health::default());
    let shutdown = CancellationToken::new();
    let exporter = Exporter::new(InfluxClient::new(&target, None)?, health);
    exporter.prepare(&shutdown).await?;
    let quantities = ["actSpeed_C11", "vaTorque_C11", "vaCurr_C11", "vaLoad_C11"];
    let start = Instant::now();
    let mut batch = Batch::new(&target);
    for i in 0..points {
        let thing = format!("M{:04}", i % 100);
        batch.add(&thing, quantities[(i / 100) % 4], i as f64 * 0.5, 1_700_000_000_000_000_000 + (i / 400) as i64 * 1_000_000);
        if batch.len() >= target.batch_size {
            exporter.flush(&mut batch, &shutdown).await?;
        }
    }
    exporter.flush(&mut batch, &shutdown).await?;
    let elapsed = start.elapsed();
    let stored = influx.query_number("bench", "SELECT count(result) FROM machine")?;
    println!(
        "export: {points} points into InfluxDB 1.x in {:.2} s: {:.0} points/s (batches of {}; {stored} stored)",
        elapsed.as_secs_f64(),
        points as f64 / elapsed.as_secs_f64(),
        target.batch_size
    );
    // The ceiling: the database's own ingest rate, the same points written as
    // line protocol in the same batches by a plain HTTP client, one request
    // at a time as the export does.
    let batch_size = target.batch_size;
    let ceiling = tokio::task::spawn_blocking(move || -> anyhow::Result<(f64, f64)> {
        influx.query("ceiling", "CREATE DATABASE ceiling")?;
        let start = Instant::now();
        let mut lines = String::new();
        for i in 0..points {
            let thing = format!("M{:04}", i % 100);
            let ts = 1_700_000_000_000_000_000i64 + (i / 400) as i64 * 1_000_000;
            lines.push_str(&format!("machine,quantity={},thing={thing} result={} {ts}\n", quantities[(i / 100) % 4], i as f64 * 0.5));
            if (i + 1) % batch_size == 0 || i + 1 == points {
                influx.write("ceiling", &lines)?;
                lines.clear();
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        Ok((elapsed, influx.query_number("ceiling", "SELECT count(result) FROM machine")?))
    })
    .await??;
    println!(
        "ceiling, InfluxDB's own ingest rate for the same points (line protocol, same batches, one request at a time): {:.2} s: {:.0} points/s ({} stored)",
        ceiling.0,
        points as f64 / ceiling.0,
        ceiling.1
    );
    Ok(())
}

/// `records` narrow records of 60 machines, speed and torque by turns,
/// into bench.raw.
fn fill_raw(kafka_config: &KafkaConfig, records: usize) -> anyhow::Result<()> {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> =
        kafka::client_config(&kafka_config).set("linger.ms", "20").create()?;
    for i in 0..records {
        let thing = format!("M{:03}", i % 60);
        let quantity = if (i / 60) % 2 == 0 { "actSpeed_C11" } else { "vaTorque_C11" };
        let value = format!(
            "{{\"thing\":\"{thing}\",\"quantity\":\"{quantity}\",\"phenomenonTime\":{},\"result\":{}}}",
            1_700_000_000_000i64 + (i / 60) as i64,
            (i % 997) as f64 * 0.5
        );
        let mut record = BaseRecord::to(kafka_config.topics.raw_name()).key(&thing).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(())
}

fn bench_join(records: usize) -> anyhow::Result<()> {
    let broker = KafkaBroker::start().map_err(|e| anyhow::anyhow!("{e}"))?;
    for (t, p) in [("bench.raw", 6), ("bench.joined", 6), ("bench.dead", 1)] {
        broker.create_topic(t, p)?;
    }
    let kafka_config = plain_kafka(broker.bootstrap_servers());
    fill_raw(&kafka_config, records)?;
    let warm = Instant::now();
    create_internal_topics(&broker.bootstrap_servers())?;
    println!(
        "a fresh broker's first transactional producer and first group create __transaction_state and __consumer_offsets \
         (50 partitions each): {:.2} s, once per cluster, before the figures below",
        warm.elapsed().as_secs_f64()
    );
    // The stage as it was before the horizon and the state topic (a horizon
    // longer than any data, a replay limit it never reaches) and as it is,
    // alternated, each in a group of its own reading the same records.
    let as_before = ("without horizon and state topic", "100000days", u64::MAX);
    let as_now = ("with the default horizon and state topic", "1h", 100_000);
    for (round, (label, horizon, replay_limit)) in [as_before, as_now, as_before, as_now].into_iter().enumerate() {
        let rules = PipelineConfig::from_yaml(&format!(
            "joins:\n  - {{name: power, left: 'actSpeed_(C\\d+)', right: 'vaTorque_(C\\d+)', output: 'power_$1', expression: '2*pi/60*left*right', stateHorizon: {horizon}}}\n"
        ))?
        .joins;
        let kafka = KafkaConfig { group_id: Some(format!("bench-{round}")), replay_limit, ..kafka_config.clone() };
        join_stage_once(&kafka, &rules, records, label)?;
    }
    let _ = broker.create_topic("bench.ceiling", 6);
    ceiling_transactional_copy(&kafka_config, records)?;
    Ok(())
}

/// Runs the join stage over the `records` already in the raw topic and
/// prints its figures.
fn join_stage_once(kafka_config: &KafkaConfig, rules: &[millrace_config::JoinRuleConfig], records: usize, label: &str) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let health = Arc::new(Health::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let worker = {
        let (health, stop, kafka_config, rules) = (health.clone(), stop.clone(), kafka_config.clone(), rules.to_vec());
        std::thread::spawn(move || millrace_worker::join::stage::run(&kafka_config, &rules, health, stop))
    };
    // Where the time goes: joining the group (until the first record), the
    // transactions' commits (the stage's own histogram), and the rest.
    let mut first_record = None;
    while counter(&health, "millrace_records_in_total{stage=\"join\"}") < records as f64 {
        if first_record.is_none() && counter(&health, "millrace_records_in_total{stage=\"join\"}") > 0.0 {
            first_record = Some(start.elapsed());
        }
        if worker.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    worker.join().expect("join thread")?;
    let elapsed = start.elapsed();
    let first_record = first_record.unwrap_or(elapsed).as_secs_f64();
    let joined = counter(&health, "millrace_records_out_total{stage=\"join\"}");
    let commits = counter(&health, "millrace_join_transaction_seconds_count");
    let committing = counter(&health, "millrace_join_transaction_seconds_sum");
    let state_writes = counter(&health, "millrace_join_state_writes_total");
    let steady = elapsed.as_secs_f64() - first_record;
    println!(
        "join on Kafka, {label}: {records} narrow records -> {joined} joined records in {:.2} s: {:.0} joined records/s, {:.0} input records/s; \
         first record after {first_record:.2} s (group join, assignment), then {:.0} input records/s; {commits} transactions took {committing:.2} s \
         ({:.1} ms each), the rest {:.2} s; {state_writes} state topic writes; Apache Kafka 4.4 on the same 2 cores",
        elapsed.as_secs_f64(),
        joined / elapsed.as_secs_f64(),
        records as f64 / elapsed.as_secs_f64(),
        records as f64 / steady,
        1000.0 * committing / commits.max(1.0),
        steady - committing,
    );
    Ok(())
}

/// Makes a fresh broker create its internal topics (what the first
/// transactional producer and the first consumer group of a cluster wait
/// for), so that the join's and the ceiling's figures are a running cluster's.
fn create_internal_topics(bootstrap: &str) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, Producer};
    use rdkafka::ClientConfig;
    let timeout = Duration::from_secs(60);
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", bootstrap).set("transactional.id", "bench-warm-up").create()?;
    producer.init_transactions(timeout)?;
    producer.begin_transaction()?;
    producer.commit_transaction(timeout)?;
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", "bench-warm-up").create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition("bench.raw", 0);
    // The group coordinator answers NotCoordinator while __consumer_offsets
    // is being made: ask again.
    let started = Instant::now();
    loop {
        match consumer.committed_offsets(tpl.clone(), timeout) {
            Ok(_) => return Ok(()),
            Err(e) if started.elapsed() < timeout => {
                eprintln!("waiting for the group coordinator: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The ceiling for the join stage: the same client (rdkafka, the same
/// consumer and producer settings) copying the same raw records to another
/// topic, in transactions committed with their offsets every 100 ms, and
/// nothing else. The stage's figure reads as a share of this one.
fn ceiling_transactional_copy(kafka: &KafkaConfig, records: usize) -> anyhow::Result<()> {
    use millrace_worker::join::stage;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let timeout = Duration::from_secs(30);
    // Its own group, so that it reads the raw topic from the start.
    let kafka = KafkaConfig { group_id: Some("bench-ceiling".into()), ..kafka.clone() };
    let producer: ThreadedProducer<DefaultProducerContext> = stage::producer_config(&kafka, "bench-ceiling").create()?;
    producer.init_transactions(timeout)?;
    let consumer: BaseConsumer = stage::consumer_config(&kafka).create()?;
    consumer.subscribe(&["bench.raw"])?;
    let start = Instant::now();
    let (mut copied, mut first_record, mut commits, mut committing) = (0usize, None, 0u32, Duration::ZERO);
    let mut next: std::collections::HashMap<i32, i64> = Default::default();
    let mut last_commit = Instant::now();
    let mut open = false;
    let commit = |next: &std::collections::HashMap<i32, i64>| -> anyhow::Result<Duration> {
        let started = Instant::now();
        while producer.in_flight_count() > 0 {
            producer.poll(Duration::from_millis(1));
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in next {
            offsets.add_partition_offset("bench.raw", *partition, Offset::Offset(*offset))?;
        }
        let group = consumer.group_metadata().ok_or_else(|| anyhow::anyhow!("no group metadata"))?;
        producer.send_offsets_to_transaction(&offsets, &group, timeout)?;
        producer.commit_transaction(timeout)?;
        Ok(started.elapsed())
    };
    while copied < records {
        let Some(message) = consumer.poll(Duration::from_millis(50)) else { continue };
        let m = message?;
        first_record.get_or_insert_with(|| start.elapsed());
        if !open {
            producer.begin_transaction()?;
            open = true;
        }
        let mut record = BaseRecord::to("bench.ceiling").payload(m.payload().unwrap_or_default());
        if let Some(key) = m.key() {
            record = record.key(key);
        }
        let mut record = Some(record);
        while let Some(r) = record.take() {
            if let Err((_, r)) = producer.send(r) {
                record = Some(r);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        next.insert(m.partition(), m.offset() + 1);
        copied += 1;
        if last_commit.elapsed() >= Duration::from_millis(100) {
            committing += commit(&next)?;
            commits += 1;
            open = false;
            last_commit = Instant::now();
        }
    }
    if open {
        committing += commit(&next)?;
        commits += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let first = first_record.unwrap_or_default().as_secs_f64();
    println!(
        "ceiling, the same client copying them transactionally: {copied} records in {elapsed:.2} s: {:.0} records/s; first record after {first:.2} s, \
         then {:.0} records/s; {commits} transactions took {:.2} s ({:.1} ms each)",
        copied as f64 / elapsed,
        copied as f64 / (elapsed - first),
        committing.as_secs_f64(),
        1000.0 * committing.as_secs_f64() / f64::from(commits.max(1)),
    );
    Ok(())
}

/// The price of TLS, measured in one run against the same servers: the
/// ingest stage from a plaintext Mosquitto to Kafka's plaintext listener,
/// and from a Mosquitto that requires TLS with a client certificate to
/// Kafka's SASL_SSL (SCRAM-SHA-512) listener of the same broker, by turns;
/// then the join stage over each of those two Kafka listeners. Both
/// Mosquittos require the same login, so only TLS differs.
async fn bench_tls(messages: u64, join_records: usize) -> anyhow::Result<()> {
    let started = |e: millrace_testkit::StartError| anyhow::anyhow!("{e}");
    let (user, password) = ("bench", "bench-password");
    let plain_mqtt = Mosquitto::start_with_password(user, password).map_err(started)?;
    let tls_mqtt = Mosquitto::start_tls(user, password).map_err(started)?;
    let broker = KafkaBroker::start_secured().map_err(started)?;
    let secure = broker.secure().clone();
    // The simulator and the Kafka clients read their logins from here.
    std::env::set_var("MILLRACE_MQTT_USERNAME", user);
    std::env::set_var("MILLRACE_MQTT_PASSWORD", password);
    std::env::set_var("MILLRACE_KAFKA_USERNAME", &secure.username);
    std::env::set_var("MILLRACE_KAFKA_PASSWORD", &secure.password);
    for (t, p) in [("bench.raw", 6), ("bench.joined", 6), ("bench.dead", 1)] {
        broker.create_topic(t, p)?;
    }
    let plain = plain_kafka(broker.bootstrap_servers());
    let secured = KafkaConfig {
        bootstrap_servers: secure.sasl_ssl.clone(),
        security: Some(millrace_config::KafkaSecurity {
            protocol: millrace_config::SecurityProtocol::SaslSsl,
            sasl_mechanism: Some(millrace_config::SaslMechanism::ScramSha512),
            credentials: None,
            tls: Some(TlsFiles { ca_file: Some(secure.ca_file.display().to_string()), ..Default::default() }),
        }),
        ..plain.clone()
    };
    let client = tls_mqtt.ca().client("bench").map_err(started)?;
    let mqtt_tls = TlsFiles {
        secret_name: None,
        ca_file: Some(tls_mqtt.ca().certificate_file.display().to_string()),
        certificate_file: Some(client.certificate_file.display().to_string()),
        key_file: Some(client.key_file.display().to_string()),
    };
    let login = Some(Credentials { username: user.into(), password: password.into() });
    let mut rates: [Vec<f64>; 2] = Default::default();
    for round in 0..4 {
        let over_tls = round % 2 == 1;
        let run = if over_tls {
            ingest_once(&tls_mqtt.url(), Some(mqtt_tls.clone()), login.clone(), &secured, messages).await?
        } else {
            ingest_once(&plain_mqtt.url(), None, login.clone(), &plain, messages).await?
        };
        let rate = messages as f64 / run.elapsed.as_secs_f64();
        rates[usize::from(over_tls)].push(rate);
        println!(
            "ingest {}: {messages} wide messages ({} narrow records) in {:.2} s: {rate:.0} messages/s; {} redelivered (publisher alone: {})",
            if over_tls { "over TLS (mqtts with a client certificate, Kafka SASL_SSL SCRAM-SHA-512)" } else { "over plaintext (mqtt, Kafka PLAINTEXT)" },
            run.records,
            run.elapsed.as_secs_f64(),
            run.redelivered,
            run.publisher,
        );
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "ingest over TLS: {:.0} messages/s against {:.0} over plaintext ({:.0}%), mean of two runs each",
        mean(&rates[1]),
        mean(&rates[0]),
        100.0 * mean(&rates[1]) / mean(&rates[0])
    );
    // The join reads topics of its own: bench.raw holds what ingest wrote.
    broker.create_topic("bench.tls.raw", 6)?;
    broker.create_topic("bench.tls.joined", 6)?;
    let on_own_topics = |kafka: &KafkaConfig| {
        let mut kafka = kafka.clone();
        kafka.topics.raw = millrace_config::TopicSpec::named("bench.tls.raw");
        kafka.topics.joined = millrace_config::TopicSpec::named("bench.tls.joined");
        kafka
    };
    let (plain, secured) = (on_own_topics(&plain), on_own_topics(&secured));
    let filled = plain.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        fill_raw(&filled, join_records)?;
        create_internal_topics(&filled.bootstrap_servers)?;
        let rules = PipelineConfig::from_yaml(
            "joins:\n  - {name: power, left: 'actSpeed_(C\\d+)', right: 'vaTorque_(C\\d+)', output: 'power_$1', expression: '2*pi/60*left*right'}\n",
        )?
        .joins;
        for (round, (label, kafka)) in [("over Kafka PLAINTEXT", &plain), ("over Kafka SASL_SSL SCRAM-SHA-512", &secured)].iter().cycle().take(4).enumerate() {
            let kafka = KafkaConfig { group_id: Some(format!("bench-tls-{round}")), ..(*kafka).clone() };
            join_stage_once(&kafka, &rules, join_records, label)?;
        }
        Ok(())
    })
    .await??;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // RUST_LOG=info shows what the stages log (reconnects, skipped acknowledgements).
    if let Ok(filter) = std::env::var("RUST_LOG") {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    // A stable MQTT client id, so that the ingest bench can reconnect to its session.
    if std::env::var_os("MILLRACE_INSTANCE").is_none() {
        std::env::set_var("MILLRACE_INSTANCE", "bench");
    }
    // BENCH_STAGES=ingest (or any of join,export,ingest,tls) runs only those.
    let stages = std::env::var("BENCH_STAGES").unwrap_or_else(|_| "join,export,ingest,tls".into());
    let wanted = |stage: &str| stages.split(',').any(|s| s.trim() == stage);
    if wanted("join") {
        let join_records: usize = std::env::var("BENCH_JOIN_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(300_000);
        tokio::task::spawn_blocking(move || bench_join(join_records)).await??;
    }
    if wanted("export") {
        let points: usize = std::env::var("BENCH_POINTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
        bench_export(points).await?;
    }
    if wanted("ingest") {
        let messages: u64 = std::env::var("BENCH_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
        bench_ingest(messages).await?;
    }
    if wanted("tls") {
        let messages: u64 = std::env::var("BENCH_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
        let join_records: usize = std::env::var("BENCH_JOIN_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(300_000);
        bench_tls(messages, join_records).await?;
    }
    Ok(())
}
