//! The join stage on Apache Kafka: exactly the spec's pair
//! set in the joined topic (read_committed), no pair missing and none
//! twice, although the worker is SIGKILLed again and again mid-stream, or
//! one of two workers in the group stops.

mod spec_pairs;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use millrace_testkit::{require, unique_name, KafkaBroker, KafkaCluster};
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message};
use serde_json::{json, Value};
use spec_pairs::{DEFAULT_HORIZON_MS, brute_force, pair_of, Pair};

const WORKER: &str = env!("CARGO_BIN_EXE_millrace-worker");

struct Topics {
    raw: String,
    joined: String,
    dead: String,
    /// The join state topic (the worker creates it).
    state: String,
    /// The pipeline's group id (the join stage's group is `<group>-join`).
    group: String,
}

fn setup(broker: &KafkaBroker) -> Topics {
    let t = Topics {
        raw: unique_name("raw"),
        joined: unique_name("joined"),
        dead: unique_name("dead"),
        state: unique_name("state"),
        group: unique_name("g"),
    };
    broker.create_topic(&t.raw, 3).unwrap();
    broker.create_topic(&t.joined, 3).unwrap();
    broker.create_topic(&t.dead, 1).unwrap();
    t
}

fn config(dir: &Path, broker: &KafkaBroker, topics: &Topics) -> PathBuf {
    config_with(dir, &broker.bootstrap_servers(), topics, "", "")
}

/// `config` with more lines under `kafka:` (indented by two spaces), and
/// more settings of the join state topic (`, replicationFactor: 3`).
fn config_with(dir: &Path, servers: &str, topics: &Topics, kafka_extra: &str, state_extra: &str) -> PathBuf {
    let path = dir.join("pipeline.yaml");
    std::fs::write(
        &path,
        format!(
            r#"kafka:
  bootstrapServers: "{}"
  groupId: "{}"
  transactionInterval: 100ms
{kafka_extra}  topics:
    raw: {{name: "{}", partitions: 3}}
    joined: {{name: "{}", partitions: 3}}
    deadLetter: {{name: "{}", partitions: 1}}
    joinState: {{name: "{}"{state_extra}}}
joins:
  - {{name: power, left: 'actSpeed_(C\d+)', right: 'vaTorque_(C\d+)', output: 'power_$1', expression: 'left*right'}}
"#,
            servers,
            topics.group,
            topics.raw,
            topics.joined,
            topics.dead,
            topics.state
        ),
    )
    .unwrap();
    path
}

/// Machines publishing speed and torque of two axes; per machine, times
/// only grow (with ties), and which quantity comes next is random.
fn stream(records: usize, seed: u64) -> Vec<Value> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let things = ["R0815", "H31415", "R27182", "M0001", "M0002"];
    let mut clock = [1_554_096_380_000i64; 5];
    (0..records)
        .map(|i| {
            let m = rng.random_range(0..things.len());
            clock[m] += rng.random_range(0..3);
            let quantity = ["actSpeed_C11", "vaTorque_C11", "actSpeed_C12", "vaTorque_C12"][rng.random_range(0..4)];
            json!({"thing": things[m], "quantity": quantity, "phenomenonTime": clock[m], "result": i as f64 - 5000.0})
        })
        .collect()
}

/// Like `stream`, with machines that go quiet beside those that flow:
/// `Q-QUIET` sends only in the first and the last tenth, `Q-DEAD` stops for
/// good after the first twentieth (its torque sensor first), and `Q-SPEED`
/// has speed but never torque. Each of them leaves records the join must
/// hold while the others flow.
fn stream_with_quiet_machines(records: usize, seed: u64) -> Vec<Value> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let things = ["R0815", "H31415", "R27182", "M0001", "Q-QUIET", "Q-DEAD", "Q-SPEED"];
    let mut clock = [1_554_096_380_000i64; 7];
    (0..records)
        .map(|i| {
            let phase = i as f64 / records as f64;
            let active: Vec<usize> = (0..things.len())
                .filter(|&m| match things[m] {
                    "Q-QUIET" => !(0.1..0.9).contains(&phase),
                    "Q-DEAD" => phase < 0.05,
                    _ => true,
                })
                .collect();
            let m = active[rng.random_range(0..active.len())];
            clock[m] += rng.random_range(0..3);
            let speed_only = things[m] == "Q-SPEED" || (things[m] == "Q-DEAD" && phase > 0.04);
            let choices = if speed_only { &["actSpeed_C11", "actSpeed_C12"][..] } else { &["actSpeed_C11", "vaTorque_C11", "actSpeed_C12", "vaTorque_C12"][..] };
            let quantity = choices[rng.random_range(0..choices.len())];
            json!({"thing": things[m], "quantity": quantity, "phenomenonTime": clock[m], "result": i as f64 - 5000.0})
        })
        .collect()
}

/// Like `stream` over twelve machines (every raw partition gets some), with
/// bad input mixed in: a late record (older than its quantity's last) every
/// 300th, a malformed one every 500th, and a speed or torque of 1e308 every
/// 700th, whose pairs are not finite numbers. Returns the stream and what
/// the join must make of it: the records it joins, and the dead letters by
/// reason.
fn stream_with_bad_input(records: usize, seed: u64) -> (Vec<Value>, Vec<Value>, BTreeMap<&'static str, usize>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let things: Vec<String> = (0..12).map(|m| format!("M{m:04}")).collect();
    let mut clock = [1_554_096_380_000i64; 12];
    let mut last: BTreeMap<(usize, &str), i64> = BTreeMap::new();
    let (mut all, mut joinable) = (Vec::new(), Vec::new());
    let mut dead = BTreeMap::from([("late", 0), ("malformed_json", 0)]);
    for i in 0..records {
        if i % 500 == 499 {
            all.push(Value::String(format!("{{\"thing\":\"M0001\",\"quantity\":\"actSpeed_C11\",oops {i}")));
            *dead.get_mut("malformed_json").unwrap() += 1;
            continue;
        }
        let m = rng.random_range(0..things.len());
        let quantity = ["actSpeed_C11", "vaTorque_C11", "actSpeed_C12", "vaTorque_C12"][rng.random_range(0..4)];
        if i % 300 == 299 {
            if let Some(t) = last.get(&(m, quantity)) {
                all.push(json!({"thing": things[m], "quantity": quantity, "phenomenonTime": t - 1, "result": i as f64}));
                *dead.get_mut("late").unwrap() += 1;
                continue;
            }
        }
        clock[m] += rng.random_range(0..3);
        let result = if i % 700 == 699 { 1e308 } else { i as f64 - 5000.0 };
        let record = json!({"thing": things[m], "quantity": quantity, "phenomenonTime": clock[m], "result": result});
        last.insert((m, quantity), clock[m]);
        all.push(record.clone());
        joinable.push(record);
    }
    (all, joinable, dead)
}

/// Produces the stream to the raw topic over about `over`, keyed by thing.
fn feed(servers: String, topic: String, records: Vec<Value>, over: Duration) -> std::thread::JoinHandle<()> {
    feed_compressed(servers, topic, records, over, "none")
}

/// `feed` with the producer's `compression.type`.
fn feed_compressed(servers: String, topic: String, records: Vec<Value>, over: Duration, codec: &'static str) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .set("enable.idempotence", "true")
            .set("compression.type", codec)
            .create()
            .unwrap();
        let chunk = (records.len() / 50).max(1);
        for part in records.chunks(chunk) {
            for r in part {
                // A JSON string stands for bytes sent as they are (malformed input).
                let value = r.as_str().map_or_else(|| r.to_string(), str::to_string);
                let key = r["thing"].as_str().unwrap_or("R0815").to_string();
                producer.send(BaseRecord::to(&topic).key(&key).payload(&value)).map_err(|(e, _)| e).unwrap();
            }
            producer.flush(Duration::from_secs(30)).unwrap();
            std::thread::sleep(over / 50);
        }
    })
}

struct Worker(Child);

impl Worker {
    /// A dynamic group member (as a Deployment's Pods would be): a killed
    /// one is evicted after the worker's 6 s session timeout.
    fn start(config: &Path, instance: &str) -> Self {
        Self::launch(config, instance, None)
    }

    /// A static group member, as the operator runs join Pods (StatefulSet
    /// names survive a restart, so a restarted instance takes its partitions
    /// back at once), appending its log, with each committed position
    /// (debug), to `log` (read back by `positions_that_went_back`).
    fn start_logged(config: &Path, instance: &str, log: &Path) -> Self {
        Self::launch(config, instance, Some(log))
    }

    /// Waits until a worker started after `before` commits were in `log`
    /// has committed a transaction of its own, so that a fault that follows
    /// lands on a worker that holds partitions and state.
    fn wait_for_commit(&mut self, log: &Path, before: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while commits_in(log) <= before {
            assert!(self.0.try_wait().unwrap().is_none(), "the join worker exited before its first commit");
            assert!(Instant::now() < deadline, "the join worker committed nothing within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn launch(config: &Path, instance: &str, log: Option<&Path>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = Command::new(WORKER);
        command
            .args(["run", "--stage", "join", "--config"])
            .arg(config)
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .env("MILLRACE_INSTANCE", instance)
            .env("MILLRACE_STATIC_MEMBERSHIP", if log.is_some() { "1" } else { "0" });
        match log {
            Some(path) => {
                let file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
                command.stderr(file).env("RUST_LOG", "warn,millrace_worker::join::stage=debug");
            }
            None => {
                command.env("RUST_LOG", std::env::var("WORKER_LOG").unwrap_or_else(|_| "warn".into()));
            }
        }
        Worker(command.spawn().unwrap())
    }

    fn kill(mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }

    fn terminate(mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A new consumer of every partition of `topic` from its beginning, at
/// `isolation` (read_committed or read_uncommitted), assigned: no group
/// join to wait for.
fn reader(servers: &str, topic: &str, isolation: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", unique_name("reader"))
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30)).unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    consumer
}

/// Hands every message to `each` until none came for 5 s.
fn read_until_quiet(consumer: &BaseConsumer, mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>)) {
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(5) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            each(&m);
            quiet_since = Instant::now();
        }
    }
}

/// The joined topic as pairs, read_committed from the beginning by one
/// reader, once it holds at least `expected` records and nothing more came
/// for 3 s (or after 120 s).
fn joined_pairs(servers: &str, topic: &str, expected: usize) -> Vec<Pair> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let consumer = reader(servers, topic, "read_committed");
    let mut pairs = Vec::new();
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let j: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                pairs.push(pair_of(&j));
                quiet_since = Instant::now();
            }
            Some(Err(e)) => panic!("reading the joined topic failed: {e}"),
            None => {}
        }
        if pairs.len() >= expected && quiet_since.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    pairs
}

/// How many transactions the workers logging to `log` have committed.
fn commits_in(log: &Path) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().matches("\"transaction committed\"").count()
}

/// Partitions rebuilt from a position older than their last committed
/// transaction, or committing a position older than the one before (the
/// pairs between the two would be emitted again), read
/// from a log written by `Worker::start_logged`; and the warnings in it.
fn positions_that_went_back(log: &Path) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut last = std::collections::HashMap::<i64, i64>::new();
    let (mut rebuilt, mut stale, mut warnings) = (0, Vec::new(), Vec::new());
    for line in text.lines() {
        let Ok(entry) = serde_json::from_str::<Value>(line) else { continue };
        let fields = &entry["fields"];
        match fields["message"].as_str().unwrap_or_default() {
            "transaction committed" => {
                let position: Value = serde_json::from_str(fields["position"].as_str().unwrap_or("{}")).unwrap_or_default();
                let (partition, pos) = (fields["partition"].as_i64().unwrap_or(-1), position["pos"].as_i64().unwrap_or(0));
                if let Some(before) = last.insert(partition, pos).filter(|before| pos < *before) {
                    stale.push(format!("partition {partition} committed {pos} after {before}"));
                }
            }
            m if m.starts_with("partition state rebuilt") => {
                rebuilt += 1;
                let (partition, pos) = (fields["partition"].as_i64().unwrap_or(-1), fields["pos"].as_i64().unwrap_or(0));
                if let Some(committed) = last.get(&partition).filter(|c| pos < **c) {
                    stale.push(format!("partition {partition} rebuilt at {pos} after {committed} was committed"));
                }
            }
            _ if entry["level"] == "WARN" || entry["level"] == "ERROR" => warnings.push(line.to_string()),
            _ => {}
        }
    }
    (format!("{rebuilt} rebuilds, stale: {stale:?}; warnings: {warnings:?}"), stale)
}

/// Whether the input itself was doubled: every generated record has its own
/// `result`, so a record seen twice in the raw topic was produced twice
/// (its pairs then come twice too, through no fault of the join).
fn explain_raw(servers: &str, topic: &str, produced: usize) -> String {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    read_until_quiet(&reader(servers, topic, "read_uncommitted"), |m| {
        let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap_or_default();
        *seen.entry(v["result"].to_string()).or_default() += 1;
    });
    let doubled = seen.values().filter(|n| **n > 1).count();
    format!("{} records read for {produced} produced, {} distinct, {doubled} of them more than once", seen.values().sum::<usize>(), seen.len())
}

/// Why pairs may be missing: per partition of the joined topic, how many
/// records read_committed and read_uncommitted see, and the watermarks
/// (committed < uncommitted means a transaction was left open).
fn explain_joined(servers: &str, topic: &str) -> String {
    let mut report = String::new();
    for isolation in ["read_committed", "read_uncommitted"] {
        let consumer = reader(servers, topic, isolation);
        let mut per_partition = std::collections::BTreeMap::<i32, (usize, i64)>::new();
        read_until_quiet(&consumer, |m| {
            let e = per_partition.entry(m.partition()).or_default();
            e.0 += 1;
            e.1 = m.offset();
        });
        report.push_str(&format!("{isolation}: (records, last offset) per partition {per_partition:?}; "));
        if isolation == "read_uncommitted" {
            for p in 0..3 {
                if let Ok(w) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                    report.push_str(&format!("partition {p} watermarks {w:?}; "));
                }
            }
        }
    }
    report
}

fn check(pairs: Vec<Pair>, want: &BTreeSet<Pair>) {
    let got: BTreeSet<Pair> = pairs.iter().cloned().collect();
    let twice = pairs.len() - got.len();
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(want).take(5).collect();
    assert!(twice == 0 && missing.is_empty() && extra.is_empty(),
        "{} pairs, {} wanted: {twice} emitted twice, missing e.g. {missing:?}, extra e.g. {extra:?}", pairs.len(), want.len());
}

fn spec(records: &[Value]) -> BTreeSet<Pair> {
    brute_force(records, &regex::Regex::new(r"^actSpeed_(C\d+)$").unwrap(), &regex::Regex::new(r"^vaTorque_(C\d+)$").unwrap(), false, Some(DEFAULT_HORIZON_MS))
}

#[test]
fn sigkill_at_random_moments_loses_and_doubles_nothing() {
    let broker = require!(KafkaBroker::start());
    let topics = setup(&broker);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &broker, &topics);
    let records = stream(12_000, 7);
    let produced = records.len();
    let want = spec(&records);
    // Input over 30 s: each kill waits for the new worker's first commit,
    // so that every one of the 12 kills lands mid-stream on a worker with state.
    let feeder = feed(broker.bootstrap_servers(), topics.raw.clone(), records, Duration::from_secs(30));

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut kills = 0;
    let log = dir.path().join("workers.log");
    while kills < 12 {
        let before = commits_in(&log);
        let mut worker = Worker::start_logged(&config, "crash", &log);
        worker.wait_for_commit(&log, before);
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1200)));
        worker.kill();
        kills += 1;
        assert!(!feeder.is_finished(), "input was all produced before kill {kills}: the kills must land mid-stream");
    }
    feeder.join().unwrap();
    let _last = Worker::start_logged(&config, "crash", &log);
    check_exactly_once(&broker.bootstrap_servers(), &topics, &log, produced, &want);
}

/// The verdict of the fault tests: the joined topic holds exactly the pair
/// set, and no worker's committed position went back (stricter than the
/// pair set: one that did would double pairs if the next fault came before
/// it recovered). On a wrong count (and with EXPLAIN=1 on a pass) it prints
/// what may have gone wrong first.
fn check_exactly_once(servers: &str, topics: &Topics, log: &Path, produced: usize, want: &BTreeSet<Pair>) {
    let pairs = joined_pairs(servers, &topics.joined, want.len());
    let (workers, went_back) = positions_that_went_back(log);
    if pairs.len() != want.len() || std::env::var_os("EXPLAIN").is_some() {
        eprintln!("join workers: {workers}");
        eprintln!("joined topic: {}", explain_joined(servers, &topics.joined));
        eprintln!("raw topic: {}", explain_raw(servers, &topics.raw, produced));
    }
    check(pairs, want);
    assert!(went_back.is_empty(), "committed positions went back: {went_back:?}");
}

/// The SIGKILL test with bad input mixed in: late records (their offsets go
/// into the commit metadata, so that a replay skips them again), malformed
/// ones and pairs that are not finite numbers. The joined topic holds
/// exactly the finite pairs of the joinable records, and the dead-letter
/// topic (read_committed) each bad input exactly once, with its reason.
#[test]
fn sigkill_with_late_malformed_and_infinite_input_dead_letters_each_once() {
    let broker = require!(KafkaBroker::start());
    let servers = broker.bootstrap_servers();
    let topics = setup(&broker);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &broker, &topics);
    let (records, joinable, mut want_dead) = stream_with_bad_input(12_000, 9);
    let produced = records.len();
    let all_pairs = spec(&joinable);
    let finite = |p: &Pair| (f64::from_bits(p.3) * f64::from_bits(p.6)).is_finite();
    let want: BTreeSet<Pair> = all_pairs.iter().filter(|p| finite(p)).cloned().collect();
    want_dead.insert("non_finite_value", all_pairs.len() - want.len());
    assert!(want_dead.values().all(|n| *n > 0), "the stream must hold every kind of bad input: {want_dead:?}");
    let feeder = feed(servers.clone(), topics.raw.clone(), records, Duration::from_secs(24));
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let log = dir.path().join("workers.log");
    for kill in 1..=8 {
        let before = commits_in(&log);
        let mut worker = Worker::start_logged(&config, "bad", &log);
        worker.wait_for_commit(&log, before);
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1200)));
        worker.kill();
        assert!(!feeder.is_finished(), "input was all produced before kill {kill}: the kills must land mid-stream");
    }
    feeder.join().unwrap();
    let _last = Worker::start_logged(&config, "bad", &log);
    for p in 0..3 {
        let (_, high) = reader(&servers, &topics.raw, "read_uncommitted").fetch_watermarks(&topics.raw, p, Duration::from_secs(10)).unwrap();
        assert!(high > 0, "raw partition {p} got no records: the keys must cover every partition");
    }
    check_exactly_once(&servers, &topics, &log, produced, &want);
    let mut dead: BTreeMap<String, usize> = BTreeMap::new();
    read_until_quiet(&reader(&servers, &topics.dead, "read_committed"), |m| {
        let letter: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        *dead.entry(letter["reason"].as_str().unwrap().to_string()).or_default() += 1;
    });
    let want_dead: BTreeMap<String, usize> = want_dead.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    eprintln!("{} pairs joined; dead letters by reason {dead:?}, wanted {want_dead:?}", want.len());
    assert_eq!(dead, want_dead, "dead letters by reason");
}

#[test]
fn two_workers_one_stopped_mid_stream_give_the_same_pairs() {
    let broker = require!(KafkaBroker::start());
    let topics = setup(&broker);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &broker, &topics);
    let records = stream(8_000, 11);
    let want = spec(&records);
    let feeder = feed(broker.bootstrap_servers(), topics.raw.clone(), records, Duration::from_secs(6));
    let a = Worker::start(&config, "a");
    let _b = Worker::start(&config, "b");
    std::thread::sleep(Duration::from_secs(3));
    a.terminate();
    feeder.join().unwrap();
    check(joined_pairs(&broker.bootstrap_servers(), &topics.joined, want.len()), &want);
}

#[test]
fn one_worker_joins_the_stream_exactly() {
    let broker = require!(KafkaBroker::start());
    let topics = setup(&broker);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &broker, &topics);
    let records = stream(6_000, 3);
    let want = spec(&records);
    let feeder = feed(broker.bootstrap_servers(), topics.raw.clone(), records, Duration::from_secs(3));
    let _worker = Worker::start(&config, "solo");
    feeder.join().unwrap();
    check(joined_pairs(&broker.bootstrap_servers(), &topics.joined, want.len()), &want);
}

#[test]
fn the_generated_stream_joins_exactly_in_process() {
    use millrace_config::PipelineConfig;
    use millrace_join::joiner::{Event, Input, Joiner};
    let records = stream(6_000, 3);
    let want = spec(&records);
    let config = PipelineConfig::from_yaml(
        "joins:\n  - {name: power, left: 'actSpeed_(C\\d+)', right: 'vaTorque_(C\\d+)', output: 'power_$1', expression: 'left*right'}\n",
    )
    .unwrap();
    let mut joiner = Joiner::new(&config.joins).unwrap();
    let mut pairs = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let raw = serde_json::value::to_raw_value(&r["phenomenonTime"]).unwrap();
        let input = Input {
            thing: r["thing"].as_str().unwrap(),
            quantity: r["quantity"].as_str().unwrap(),
            time: r["phenomenonTime"].as_i64().unwrap() * 1_000_000,
            time_raw: &raw,
            result: r["result"].as_f64().unwrap(),
            seq: i as u64,
        };
        joiner.push(&input, &mut |e| {
            if let Event::Joined(j) = e {
                pairs.push(pair_of(&serde_json::from_slice(&j.to_json()).unwrap()));
            }
        });
    }
    check(pairs, &want);
}

/// The raw topic's retention at its most aggressive: every record before
/// the join's committed offsets is deleted (Kafka's DeleteRecords, which is
/// what retention does to old segments) every 300 ms while it runs.
struct Retention {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<i64>>,
}

impl Retention {
    fn start(servers: &str, topics: &Topics) -> Self {
        use rdkafka::admin::{AdminClient, AdminOptions};
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (servers, raw, group) = (servers.to_string(), topics.raw.clone(), format!("{}-join", topics.group));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let admin: AdminClient<rdkafka::client::DefaultClientContext> =
                ClientConfig::new().set("bootstrap.servers", &servers).create().unwrap();
            let committed: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &servers).set("group.id", &group).create().unwrap();
            let mut deleted_up_to = [0i64; 3];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(300));
                let mut wanted = rdkafka::TopicPartitionList::new();
                for p in 0..3 {
                    wanted.add_partition(&raw, p);
                }
                let Ok(offsets) = committed.committed_offsets(wanted, Duration::from_secs(5)) else { continue };
                let mut delete = rdkafka::TopicPartitionList::new();
                for e in offsets.elements() {
                    if let rdkafka::Offset::Offset(o) = e.offset() {
                        if o > deleted_up_to[e.partition() as usize] {
                            delete.add_partition_offset(&raw, e.partition(), rdkafka::Offset::Offset(o)).unwrap();
                            deleted_up_to[e.partition() as usize] = o;
                        }
                    }
                }
                if delete.count() > 0 {
                    futures::executor::block_on(admin.delete_records(&delete, &AdminOptions::new())).expect("DeleteRecords");
                }
            }
            deleted_up_to.iter().sum()
        });
        Self { stop, thread: Some(thread) }
    }

    /// Stops; returns how many raw records it deleted in all.
    fn stop(mut self) -> i64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Per rebuild of a partition in `log`: how many raw records it re-read
/// (from its committed offset to the position committed before) and how
/// many held records it got back from the state topic.
fn replays_in(log: &Path) -> Vec<(i64, i64)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["fields"]["message"].as_str().is_some_and(|m| m.starts_with("partition state rebuilt")))
        .map(|e| {
            let f = &e["fields"];
            ((f["pos"].as_i64().unwrap() - f["first_offset"].as_i64().unwrap()).max(0), f["restored"].as_i64().unwrap())
        })
        .collect()
}

/// Machines that go quiet, stop for good or have one side only hold records
/// that a restart needs. The worker is SIGKILLed 8 times mid-stream while
/// everything before its committed offsets is deleted from the raw topic:
/// the joined topic still holds exactly the pair set, every restart re-reads
/// at most `replayLimit` raw records per partition (the rest comes back from
/// the join state topic), and the committed offsets end within that limit
/// of the end of the raw topic although some records are held since its
/// first tenth.
#[test]
fn quiet_machines_neither_hold_the_offsets_back_nor_need_the_deleted_records() {
    const REPLAY_LIMIT: i64 = 300;
    let broker = require!(KafkaBroker::start());
    let servers = broker.bootstrap_servers();
    let topics = setup(&broker);
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(dir.path(), &servers, &topics, &format!("  replayLimit: {REPLAY_LIMIT}\n"), "");
    let records = stream_with_quiet_machines(12_000, 77);
    let produced = records.len();
    let want = spec(&records);
    let feeder = feed(servers.clone(), topics.raw.clone(), records, Duration::from_secs(24));
    let retention = Retention::start(&servers, &topics);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let log = dir.path().join("workers.log");
    for kill in 1..=8 {
        let before = commits_in(&log);
        let mut worker = Worker::start_logged(&config, "quiet", &log);
        worker.wait_for_commit(&log, before);
        std::thread::sleep(Duration::from_millis(rng.random_range(500..1500)));
        worker.kill();
        assert!(!feeder.is_finished(), "input was all produced before kill {kill}: the kills must land mid-stream");
    }
    feeder.join().unwrap();
    let last = Worker::start_logged(&config, "quiet", &log);
    check_exactly_once(&servers, &topics, &log, produced, &want);

    let replays = replays_in(&log);
    let most = replays.iter().map(|r| r.0).max().unwrap_or(0);
    let restored: i64 = replays.iter().map(|r| r.1).sum();
    let deleted = retention.stop();
    eprintln!("{} rebuilds: re-read at most {most} raw records, {restored} held records restored in all; {deleted} raw records deleted behind the commits", replays.len());
    assert!(most <= REPLAY_LIMIT, "a restart re-read {most} raw records, more than the limit {REPLAY_LIMIT}: {replays:?}");
    assert!(restored > 0, "no rebuild needed the state topic: the test does not test it");
    assert!(deleted > 0, "nothing was deleted from the raw topic");

    // The offsets moved on although Q-DEAD's records are held since the start.
    let committed: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &servers).set("group.id", format!("{}-join", topics.group)).create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition(&topics.raw, p);
    }
    let offsets = committed.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    for e in offsets.elements() {
        let (_, high) = committed.fetch_watermarks(&topics.raw, e.partition(), Duration::from_secs(10)).unwrap();
        let rdkafka::Offset::Offset(at) = e.offset() else {
            assert_eq!(high, 0, "partition {} holds records but has no committed offset", e.partition());
            continue; // no machine of the stream hashes to it
        };
        assert!(high - at <= REPLAY_LIMIT, "partition {}: committed offset {at} is {} behind the end {high}", e.partition(), high - at);
    }
    drop(last);
}

/// A join worker started again whenever it exits (as Kubernetes would),
/// and one read_committed reader of the joined topic, kept across the
/// faults, that counts what is visible.
struct Supervised<'a> {
    config: &'a Path,
    instance: &'static str,
    log: &'a Path,
    started: Instant,
    worker: Worker,
    /// How and when the worker exited, for the test's report.
    exits: Vec<String>,
    watch: BaseConsumer,
    visible: usize,
}

impl<'a> Supervised<'a> {
    fn start(config: &'a Path, instance: &'static str, log: &'a Path, servers: &str, joined: &str, started: Instant) -> Self {
        let worker = Worker::start_logged(config, instance, log);
        Self { config, instance, log, started, worker, exits: Vec::new(), watch: reader(servers, joined, "read_committed"), visible: 0 }
    }

    /// Counts joined records until `at_least` are visible or `timeout` has
    /// passed, restarting the worker when it exits; returns how many are.
    fn wait_for(&mut self, at_least: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while self.visible < at_least && Instant::now() < deadline {
            if let Some(status) = self.worker.0.try_wait().unwrap() {
                self.exits.push(format!("{status} after {:.1?}", self.started.elapsed()));
                assert!(self.exits.len() <= 10, "the worker exited more than 10 times: {:?}", self.exits);
                self.worker = Worker::start_logged(self.config, self.instance, self.log);
            }
            match self.watch.poll(Duration::from_millis(200)) {
                Some(Ok(_)) => self.visible += 1,
                Some(Err(e)) => eprintln!("watch reader: {e}"), // broker away: retried
                None => {}
            }
        }
        self.visible
    }
}

/// The single broker restarted (SIGTERM, then started on the same data)
/// twice while a join worker runs and input is still produced; a worker
/// that exits (e.g. a fatal producer error) is started again, as
/// Kubernetes would. The joined topic still holds exactly the spec's pair
/// set, and no committed position went back.
#[test]
fn broker_restarted_twice_mid_stream_loses_and_doubles_nothing() {
    let mut broker = require!(KafkaBroker::start());
    let servers = broker.bootstrap_servers();
    let topics = setup(&broker);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &broker, &topics);
    let records = stream(12_000, 23);
    let produced = records.len();
    let want = spec(&records);
    let started = Instant::now();
    let feeder = feed(servers.clone(), topics.raw.clone(), records, Duration::from_secs(20));
    let log = dir.path().join("workers.log");
    let mut join = Supervised::start(&config, "restarts", &log, &servers, &topics.joined, started);
    let mut restarts_at = Vec::new();
    for round in 1..=2 {
        let seen = join.wait_for(visible_goal(round, want.len()), Duration::from_secs(60));
        assert!(seen >= visible_goal(round, want.len()), "only {seen} joined records visible before restart {round}");
        assert!(!feeder.is_finished(), "input was all produced before restart {round}: the restart must be mid-stream");
        restarts_at.push(format!("restart {round} at {seen} joined records, {:.1?}", started.elapsed()));
        broker.restart().unwrap_or_else(|e| panic!("broker restart {round}: {e}\n{}", broker.log_tail()));
    }
    while !feeder.is_finished() {
        join.wait_for(usize::MAX, Duration::from_millis(500));
    }
    feeder.join().unwrap();
    let seen = join.wait_for(want.len(), Duration::from_secs(120));
    eprintln!("{restarts_at:?}; {seen} joined records visible, {} wanted; worker exits: {:?}; {:.1?}", want.len(), join.exits, started.elapsed());
    // Judged while the worker still runs, so that a pair it doubled late is seen too.
    check_exactly_once(&servers, &topics, &log, produced, &want);
    drop(join);
}

/// A three-broker cluster (replication 3, min.insync.replicas 2): the
/// leader of a raw partition is SIGKILLed mid-stream and started again 8 s
/// later. The join worker (restarted whenever it exits, as Kubernetes would)
/// gets stuck nowhere, and the joined topic holds exactly the pair set.
#[test]
fn the_partition_leader_killed_in_a_three_broker_cluster_loses_and_doubles_nothing() {
    let mut cluster = require!(KafkaCluster::start());
    let servers = cluster.bootstrap_servers();
    let topics = Topics {
        raw: unique_name("raw"),
        joined: unique_name("joined"),
        dead: unique_name("dead"),
        state: unique_name("state"),
        group: unique_name("g"),
    };
    cluster.create_topic(&topics.raw, 3).unwrap();
    cluster.create_topic(&topics.joined, 3).unwrap();
    cluster.create_topic(&topics.dead, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(dir.path(), &servers, &topics, "", ", replicationFactor: 3");
    let records = stream(12_000, 31);
    let produced = records.len();
    let want = spec(&records);
    let started = Instant::now();
    let feeder = feed(servers.clone(), topics.raw.clone(), records, Duration::from_secs(20));
    let log = dir.path().join("workers.log");
    let mut join = Supervised::start(&config, "leader-kill", &log, &servers, &topics.joined, started);
    let seen = join.wait_for(want.len() / 10, Duration::from_secs(60));
    assert!(seen >= want.len() / 10, "only {seen} joined records visible before the kill");
    assert!(!feeder.is_finished(), "input was all produced before the kill: it must be mid-stream");
    // The leader of raw partition 0, by its port.
    let metadata_client: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &servers).create().unwrap();
    let metadata = metadata_client.fetch_metadata(Some(&topics.raw), Duration::from_secs(10)).unwrap();
    let leader_id = metadata.topics()[0].partitions().iter().find(|p| p.id() == 0).unwrap().leader();
    let port = metadata.brokers().iter().find(|b| b.id() == leader_id).unwrap().port() as u16;
    let node = (0..KafkaCluster::NODES).find(|&i| cluster.port(i) == port).unwrap();
    let killed_at = started.elapsed();
    cluster.kill_node(node);
    join.wait_for(usize::MAX, Duration::from_secs(8));
    cluster.restart_node(node).unwrap();
    while !feeder.is_finished() {
        join.wait_for(usize::MAX, Duration::from_millis(500));
    }
    feeder.join().unwrap();
    let seen = join.wait_for(want.len(), Duration::from_secs(120));
    eprintln!("leader (node {}) killed at {killed_at:.1?} after {} joined records; {seen} visible at the end, {} wanted; worker exits: {:?}; {:.1?}",
        leader_id, want.len() / 10, want.len(), join.exits, started.elapsed());
    check_exactly_once(&servers, &topics, &log, produced, &want);
    drop(join);
}

/// Joined records to see before broker restart `round`: a tenth, then a
/// third of the expected pairs (both are reached while input is produced).
fn visible_goal(round: usize, expected: usize) -> usize {
    if round == 1 { expected / 10 } else { expected / 3 }
}

/// A join worker on a secured listener: `security` goes under `kafka:`,
/// `env` holds its credentials; its log (stderr) goes to `log`.
fn secured_worker(dir: &Path, servers: &str, topics: &Topics, security: &str, env: &[(&str, &str)], log: &Path) -> (Worker, u16) {
    let config = config_with(dir, servers, topics, security, "");
    let port = millrace_testkit::free_port();
    let child = Command::new(WORKER)
        .args(["run", "--stage", "join", "--config"])
        .arg(&config)
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("MILLRACE_INSTANCE", unique_name("secured"))
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    (Worker(child), port)
}

/// `/readyz` of a worker's metrics port: Some(true) ready, Some(false) not
/// ready, None not answering (yet, or any more).
fn ready(port: u16) -> Option<bool> {
    match ureq::get(&format!("http://127.0.0.1:{port}/readyz")).call() {
        Ok(_) => Some(true),
        Err(ureq::Error::StatusCode(503)) => Some(false),
        Err(_) => None,
    }
}

/// SASL over TLS with the broker's CA (SCRAM-SHA-512, SCRAM-SHA-256 and
/// PLAIN), and mutual TLS with a client certificate: each joins the stream
/// exactly (Apache Kafka 4.4 with those listeners, certificates made by
/// the test).
#[test]
fn the_join_stage_works_over_sasl_with_tls_and_over_mutual_tls() {
    let broker = require!(KafkaBroker::start_secured());
    let s = broker.secure().clone();
    let (ca, cert, key) = (s.ca_file.display().to_string(), s.client.certificate_file.display().to_string(), s.client.key_file.display().to_string());
    let sasl = |mechanism: &str| format!("  security: {{protocol: SASL_SSL, saslMechanism: {mechanism}, tls: {{caFile: '{ca}'}}}}\n");
    let (scram512, scram256, plain) = (sasl("SCRAM-SHA-512"), sasl("SCRAM-SHA-256"), sasl("PLAIN"));
    let mtls = format!("  security: {{protocol: SSL, tls: {{caFile: '{ca}', certificateFile: '{cert}', keyFile: '{key}'}}}}\n");
    let login = [("MILLRACE_KAFKA_USERNAME", s.username.as_str()), ("MILLRACE_KAFKA_PASSWORD", s.password.as_str())];
    let ways = [
        ("SASL_SSL SCRAM-SHA-512", &s.sasl_ssl, &scram512, &login[..], 3_000),
        ("SASL_SSL SCRAM-SHA-256", &s.sasl_ssl, &scram256, &login[..], 1_000),
        ("SASL_SSL PLAIN", &s.sasl_ssl, &plain, &login[..], 1_000),
        ("mTLS", &s.mtls, &mtls, &[][..], 3_000),
    ];
    for (i, (name, servers, security, env, count)) in ways.into_iter().enumerate() {
        let topics = setup(&broker);
        let dir = tempfile::tempdir().unwrap();
        let records = stream(count, 40 + i as u64);
        let want = spec(&records);
        let feeder = feed(broker.bootstrap_servers(), topics.raw.clone(), records, Duration::from_secs(2));
        let log = dir.path().join("worker.log");
        let (worker, _) = secured_worker(dir.path(), servers, &topics, security, env, &log);
        feeder.join().unwrap();
        let pairs = joined_pairs(&broker.bootstrap_servers(), &topics.joined, want.len());
        if pairs.len() != want.len() {
            eprintln!("{name} worker log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        check(pairs, &want);
        eprintln!("{name}: {} pairs joined exactly over {servers}", want.len());
        worker.terminate();
    }
}

/// A wrong password or a CA that did not sign the broker's certificate:
/// the worker says which broker and why, is not ready, and writes nothing;
/// with the cause fixed (the right Secret, a restarted Pod) it joins all.
#[test]
fn a_wrong_password_or_ca_is_named_not_ready_and_writes_nothing() {
    let broker = require!(KafkaBroker::start_secured());
    let s = broker.secure().clone();
    let (ca, other_ca) = (s.ca_file.display().to_string(), s.other_ca_file.display().to_string());
    let with_ca = |ca: &str| format!("  security: {{protocol: SASL_SSL, saslMechanism: SCRAM-SHA-512, tls: {{caFile: '{ca}'}}}}\n");
    let topics = setup(&broker);
    let dir = tempfile::tempdir().unwrap();
    let records = stream(2_000, 77);
    let want = spec(&records);
    feed(broker.bootstrap_servers(), topics.raw.clone(), records, Duration::from_millis(500)).join().unwrap();
    let wrong_password = [("MILLRACE_KAFKA_USERNAME", s.username.as_str()), ("MILLRACE_KAFKA_PASSWORD", "not-the-password")];
    let right = [("MILLRACE_KAFKA_USERNAME", s.username.as_str()), ("MILLRACE_KAFKA_PASSWORD", s.password.as_str())];
    for (case, security, env, says) in [
        ("wrong password", with_ca(&ca), &wrong_password[..], "Authentication failed"),
        ("wrong CA", with_ca(&other_ca), &right[..], "certificate verify failed"),
    ] {
        let log = dir.path().join(format!("{}.log", case.replace(' ', "-")));
        let (mut worker, port) = secured_worker(dir.path(), &s.sasl_ssl, &topics, &security, env, &log);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains(says) && text.contains(&s.sasl_ssl) {
                break;
            }
            assert!(Instant::now() < deadline, "{case}: no error naming {} and {says:?} within 60 s:\n{text}", s.sasl_ssl);
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_ne!(ready(port), Some(true), "{case}: /readyz must not say ready");
        assert!(!std::fs::read_to_string(&log).unwrap().contains(&s.password), "{case}: the password in a log line");
        let _ = worker.0.kill();
        let _ = worker.0.wait();
    }
    let empty = reader(&broker.bootstrap_servers(), &topics.joined, "read_uncommitted");
    let mut written = 0;
    read_until_quiet(&empty, |_| written += 1);
    assert_eq!(written, 0, "nothing may be written without a working login");
    // Fixed: the right password and CA.
    let log = dir.path().join("fixed.log");
    let (worker, _) = secured_worker(dir.path(), &s.sasl_ssl, &topics, &with_ca(&ca), &right, &log);
    check(joined_pairs(&broker.bootstrap_servers(), &topics.joined, want.len()), &want);
    worker.terminate();
}

/// Raw records compressed with each codec Kafka has are read, and the join
/// stage writes with it too (a client built without one refuses it).
#[test]
fn records_compressed_with_gzip_snappy_lz4_and_zstd_are_joined() {
    let broker = require!(KafkaBroker::start());
    for (i, codec) in ["gzip", "snappy", "lz4", "zstd"].into_iter().enumerate() {
        let topics = setup(&broker);
        let dir = tempfile::tempdir().unwrap();
        let config = config_with(dir.path(), &broker.bootstrap_servers(), &topics, &format!("  properties: {{compression.type: {codec}}}\n"), "");
        let records = stream(1_500, 90 + i as u64);
        let want = spec(&records);
        let feeder = feed_compressed(broker.bootstrap_servers(), topics.raw.clone(), records, Duration::from_secs(1), codec);
        let worker = Worker::start(&config, &format!("codec-{codec}"));
        feeder.join().unwrap();
        check(joined_pairs(&broker.bootstrap_servers(), &topics.joined, want.len()), &want);
        worker.terminate();
    }
}
