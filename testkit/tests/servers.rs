//! The harness proves itself: each server does real work and leaves nothing
//! behind.

use std::time::Duration;

use millrace_testkit::{require, unique_name, InfluxDb, KafkaBroker, KafkaCluster, Mosquitto};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message};

#[tokio::test]
async fn mqtt_message_goes_through_mosquitto() {
    let broker = require!(Mosquitto::start());
    let mut opts = rumqttc::MqttOptions::new(unique_name("sub"), "127.0.0.1", broker.port());
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 10);
    client.subscribe("machines/#", rumqttc::QoS::AtLeastOnce).await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(20), async {
        let mut published = false;
        loop {
            match events.poll().await.expect("MQTT connection failed") {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) if !published => {
                    client.publish("machines/R0815", rumqttc::QoS::AtLeastOnce, false, &b"{\"Thing\":\"R0815\"}"[..]).await.unwrap();
                    published = true;
                }
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => return p,
                _ => {}
            }
        }
    })
    .await
    .expect("no message within 20 s");
    assert_eq!(received.topic, "machines/R0815");
    assert_eq!(&received.payload[..], b"{\"Thing\":\"R0815\"}");
}

#[test]
fn mosquitto_with_a_password_refuses_strangers() {
    let broker = require!(Mosquitto::start_with_password("plant", "s3cret"));
    let connect = |user: Option<(&str, &str)>| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut opts = rumqttc::MqttOptions::new(unique_name("c"), "127.0.0.1", broker.port());
            if let Some((u, p)) = user {
                opts.set_credentials(u, p);
            }
            let (_client, mut events) = rumqttc::AsyncClient::new(opts, 10);
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        })
    };
    assert!(connect(Some(("plant", "s3cret"))));
    assert!(!connect(Some(("plant", "wrong"))));
    assert!(!connect(None));
}

fn read_all(servers: &str, topic: &str, isolation: &str, expected: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", unique_name("g"))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // Read past `expected` for a moment, so that extra records would show.
    let mut quiet_until = None;
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => seen.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()),
            Some(Err(e)) => panic!("consume failed: {e}"),
            None => {}
        }
        if seen.len() >= expected {
            let until = *quiet_until.get_or_insert_with(|| std::time::Instant::now() + Duration::from_secs(2));
            if std::time::Instant::now() > until {
                break;
            }
        }
    }
    seen
}

#[test]
fn kafka_transactions_are_seen_correctly_by_read_committed() {
    let broker = require!(KafkaBroker::start());
    let topic = unique_name("tx");
    broker.create_topic(&topic, 1).unwrap();
    let servers = broker.bootstrap_servers();

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .set("transactional.id", unique_name("txid"))
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(20)).unwrap();
    producer.begin_transaction().unwrap();
    producer.send(BaseRecord::<str, str>::to(&topic).key("k").payload("committed-1")).map_err(|(e, _)| e).unwrap();
    producer.send(BaseRecord::<str, str>::to(&topic).key("k").payload("committed-2")).map_err(|(e, _)| e).unwrap();
    producer.commit_transaction(Duration::from_secs(20)).unwrap();
    producer.begin_transaction().unwrap();
    producer.send(BaseRecord::<str, str>::to(&topic).key("k").payload("aborted")).map_err(|(e, _)| e).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    producer.abort_transaction(Duration::from_secs(20)).unwrap();
    producer.begin_transaction().unwrap();
    producer.send(BaseRecord::<str, str>::to(&topic).key("k").payload("committed-3")).map_err(|(e, _)| e).unwrap();
    producer.commit_transaction(Duration::from_secs(20)).unwrap();

    let committed = read_all(&servers, &topic, "read_committed", 3);
    assert_eq!(committed, vec!["committed-1", "committed-2", "committed-3"]);
    let uncommitted = read_all(&servers, &topic, "read_uncommitted", 4);
    assert!(uncommitted.contains(&"aborted".to_string()), "the aborted record is in the log: {uncommitted:?}");
}

#[test]
fn kafka_plain_produce_and_consume() {
    let broker = require!(KafkaBroker::start());
    let topic = unique_name("plain");
    broker.create_topic(&topic, 3).unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", broker.bootstrap_servers()).create().unwrap();
    for i in 0..100 {
        let payload = format!("m{i}");
        producer.send(BaseRecord::<str, str>::to(&topic).key(&format!("k{}", i % 7)).payload(&payload)).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(20)).unwrap();
    let mut seen = read_all(&broker.bootstrap_servers(), &topic, "read_committed", 100);
    seen.sort();
    let mut want: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(seen, want);
}

#[test]
fn influxdb_writes_and_queries_a_point() {
    let influx = require!(InfluxDb::start());
    let db = unique_name("db").replace('-', "_");
    influx.query(&db, &format!("CREATE DATABASE {db}")).unwrap();
    influx.write(&db, "machine,thing=R0815,quantity=actSpeed_C11 result=288.2 1554096380468000000\n").unwrap();
    let answer = influx.query(&db, "SELECT result FROM machine WHERE thing = 'R0815'").unwrap();
    let row = answer.pointer("/results/0/series/0/values/0").expect("one row").clone();
    assert_eq!(row[1], serde_json::json!(288.2));
    assert_eq!(influx.query_number(&db, "SELECT count(result) FROM machine").unwrap(), 1.0);
}

#[test]
fn influxdb_keeps_its_data_across_a_restart() {
    let mut influx = require!(InfluxDb::start());
    let db = unique_name("db").replace('-', "_");
    influx.query(&db, &format!("CREATE DATABASE {db}")).unwrap();
    influx.write(&db, "m,thing=a,quantity=q result=1 1\n").unwrap();
    influx.restart().unwrap();
    assert_eq!(influx.query_number(&db, "SELECT count(result) FROM m").unwrap(), 1.0);
}

#[test]
fn a_dropped_server_leaves_no_process_and_no_files() {
    let broker = require!(Mosquitto::start());
    let port = broker.port();
    let dirs_before = std::fs::read_dir(std::env::temp_dir().join(format!("millrace-test-{}", std::process::id())))
        .unwrap()
        .count();
    drop(broker);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "broker still listening on {port}");
    let dirs_after = std::fs::read_dir(std::env::temp_dir().join(format!("millrace-test-{}", std::process::id())))
        .unwrap()
        .count();
    assert!(dirs_after < dirs_before, "its directory was not removed");
}

#[test]
fn kafka_keeps_offsets_and_metadata_committed_in_a_transaction() {
    use rdkafka::consumer::Consumer;
    use rdkafka::{Offset, TopicPartitionList};
    let broker = require!(KafkaBroker::start());
    let topic = unique_name("meta");
    broker.create_topic(&topic, 1).unwrap();
    let servers = broker.bootstrap_servers();
    let group = unique_name("g");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .set("transactional.id", unique_name("txid"))
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(20)).unwrap();
    // Join the group first: offsets are sent with its metadata.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while consumer.assignment().unwrap().count() == 0 && std::time::Instant::now() < deadline {
        let _ = consumer.poll(Duration::from_millis(100));
    }
    producer.begin_transaction().unwrap();
    producer.send(BaseRecord::<str, str>::to(&topic).key("k").payload("x")).map_err(|(e, _)| e).unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(&topic, 0, Offset::Offset(1)).unwrap();
    offsets.find_partition(&topic, 0).unwrap().set_metadata(r#"{"pos":7}"#);
    producer.send_offsets_to_transaction(&offsets, &consumer.group_metadata().unwrap(), Duration::from_secs(20)).unwrap();
    producer.commit_transaction(Duration::from_secs(20)).unwrap();

    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&topic, 0);
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(20)).unwrap();
    let e = committed.elements()[0].metadata().to_string();
    assert_eq!(committed.elements()[0].offset(), Offset::Offset(1));
    assert_eq!(e, r#"{"pos":7}"#);
}

/// Delivery reports of an idempotent producer: acknowledged payloads and errors.
#[derive(Default, Clone)]
struct Acks(std::sync::Arc<std::sync::Mutex<(Vec<String>, Vec<String>)>>);
impl rdkafka::ClientContext for Acks {}
impl rdkafka::producer::ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        let mut acks = self.0.lock().unwrap();
        match result {
            Ok(m) => acks.0.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()),
            Err((e, m)) => acks.1.push(format!("{}: {e}", String::from_utf8_lossy(m.payload().unwrap_or_default()))),
        }
    }
}

#[test]
fn kafka_cluster_loses_nothing_acknowledged_when_a_broker_is_killed_mid_stream() {
    let mut cluster = require!(KafkaCluster::start());
    let topic = unique_name("kill");
    cluster.create_topic(&topic, 3).unwrap();
    let servers = cluster.bootstrap_servers();
    let acks = Acks::default();
    let producer: ThreadedProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "180000")
        .set("linger.ms", "5")
        .create_with_context(acks.clone())
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let payload = format!("r{n}");
                let key = format!("k{}", n % 11);
                loop {
                    match producer.send(BaseRecord::<str, str>::to(&topic).key(&key).payload(&payload)) {
                        Ok(()) => break,
                        Err((e, _)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        Err((e, _)) => panic!("send failed: {e}"),
                    }
                }
                n += 1;
                if n.is_multiple_of(10) {
                    std::thread::sleep(Duration::from_millis(10)); // about 1000 records/s
                }
            }
            n
        });
        std::thread::sleep(Duration::from_secs(3));
        let acked_before = acks.0.lock().unwrap().0.len();
        cluster.kill_node(1);
        std::thread::sleep(Duration::from_secs(10));
        let acked_down = acks.0.lock().unwrap().0.len() - acked_before;
        let restarted = std::time::Instant::now();
        cluster.restart_node(1).unwrap();
        eprintln!("killed node restarted and ready in {:.1?}; {acked_before} acked before the kill, {acked_down} while it was down", restarted.elapsed());
        cluster.wait_full_isr(&topic, Duration::from_secs(60)).unwrap();
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        sender.join().unwrap()
    });
    producer.flush(Duration::from_secs(180)).unwrap();
    let (acked, errors) = acks.0.lock().unwrap().clone();
    assert!(errors.is_empty(), "deliveries failed: {:?}", &errors[..errors.len().min(10)]);
    assert_eq!(acked.len() as u64, sent, "every sent record is acknowledged");
    let read = read_all(&servers, &topic, "read_committed", acked.len());
    let unique: std::collections::HashSet<&String> = read.iter().collect();
    assert_eq!(unique.len(), read.len(), "duplicates read back: {} records, {} unique", read.len(), unique.len());
    let acked_set: std::collections::HashSet<&String> = acked.iter().collect();
    let lost: Vec<&&String> = acked_set.difference(&unique).take(10).collect();
    assert!(lost.is_empty(), "acknowledged records lost: {lost:?}");
    assert_eq!(unique, acked_set, "read back exactly what was acknowledged");
    eprintln!("{sent} sent = {} acked = {} read back, no duplicates", acked.len(), read.len());
}

#[test]
fn kafka_broker_restart_keeps_its_topics_and_records() {
    let mut broker = require!(KafkaBroker::start());
    let topic = unique_name("restart");
    broker.create_topic(&topic, 2).unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for i in 0..50 {
        producer.send(BaseRecord::<str, str>::to(&topic).key(&format!("k{i}")).payload(&format!("m{i}"))).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(20)).unwrap();
    drop(producer);
    let t = std::time::Instant::now();
    broker.restart().unwrap();
    eprintln!("broker stop + restart -> ready in {:.1?}", t.elapsed());
    let mut seen = read_all(&broker.bootstrap_servers(), &topic, "read_committed", 50);
    seen.sort();
    let mut want: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(seen, want);
}
