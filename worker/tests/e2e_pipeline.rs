//! The whole pipeline against real Mosquitto, InfluxDB and (for the staged
//! form) Apache Kafka: the prototype's machine data goes in
//! through MQTT and every quantity comes out in InfluxDB, with the joined
//! power, nothing lost or doubled, embedded and as three stages on Kafka,
//! also across a broker restart and an InfluxDB outage; bad messages land
//! in the dead letters with their reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use millrace_testkit::{require, unique_name, InfluxDb, KafkaBroker, KafkaCluster, Mosquitto};

mod spec_pairs;

const WIDE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/test_events.jsonl");
const NARROW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/narrow-events.jsonl");
const WORKER: &str = env!("CARGO_BIN_EXE_millrace-worker");

struct Worker {
    child: Child,
    metrics: String,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Worker {
    fn start(config: &Path) -> Self {
        Self::start_stage(config, None)
    }

    fn start_stage(config: &Path, stage: Option<&str>) -> Self {
        // A stable MQTT client id: a restarted worker resumes its session.
        Self::launch(config, stage, &[("MILLRACE_INSTANCE", "e2e")])
    }

    /// Embedded, as instance `instance`, with more environment.
    fn start_as(config: &Path, instance: &str, env: &[(&str, &str)]) -> Self {
        let mut all = vec![("MILLRACE_INSTANCE", instance)];
        all.extend_from_slice(env);
        Self::launch(config, None, &all)
    }

    fn launch(config: &Path, stage: Option<&str>, env: &[(&str, &str)]) -> Self {
        let worker = Self::spawn(config, stage, env, std::process::Stdio::inherit());
        wait_for(Duration::from_secs(30), "the worker to subscribe", || worker.ready());
        worker
    }

    /// Started, without waiting for it to be ready; its standard error goes to `stderr`.
    fn spawn(config: &Path, stage: Option<&str>, env: &[(&str, &str)], stderr: std::process::Stdio) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(WORKER)
            .args(["run", "--config"])
            .arg(config)
            .args(stage.map(|s| vec!["--stage", s]).unwrap_or_default())
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Self { child, metrics: format!("http://127.0.0.1:{port}") }
    }

    fn ready(&self) -> bool {
        ureq::get(&format!("{}/readyz", self.metrics)).call().is_ok()
    }

    /// SIGTERM, then the exit status: a graceful stop flushes everything.
    fn stop(mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "worker did not stop within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn metric(&self, line_start: &str) -> f64 {
        let text = ureq::get(&format!("{}/metrics", self.metrics)).call().unwrap().body_mut().read_to_string().unwrap();
        text.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(0.0)
    }
}

fn wait_for(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn config(dir: &Path, mqtt: &Mosquitto, influx: &InfluxDb, db: &str) -> PathBuf {
    config_with_qos(dir, mqtt, influx, db, 1)
}

fn config_with_qos(dir: &Path, mqtt: &Mosquitto, influx: &InfluxDb, db: &str, qos: u8) -> PathBuf {
    let path = dir.join("pipeline.yaml");
    std::fs::write(
        &path,
        format!(
            r#"mqtt: {{url: "{}", topics: ["machines/#"], qos: {qos}, clientId: "{}"}}
joins:
  - {{name: power, left: 'actSpeed_(C\d+)', right: 'vaTorque_(C\d+)', output: 'derivedPower_$1', expression: '2*pi/60*left*right'}}
influxdb: {{url: "{}", database: "{db}", batchSize: 2000, flushInterval: 100ms}}
deadLetter: {{file: "{}"}}
"#,
            mqtt.url(),
            unique_name("w"),
            influx.url(),
            dir.join("dead-letters.jsonl").display()
        ),
    )
    .unwrap();
    path
}

fn simulate(mqtt: &Mosquitto, args: &[&str]) {
    let out = Command::new(WORKER).args(["simulate", "--url", &mqtt.url(), "--rate", "0"]).args(args).output().unwrap();
    assert!(out.status.success(), "simulate failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The join spec's pair set for the recorded machine data and the
/// pipelines' rule (power from speed and torque, default horizon), worked
/// out by the tests' own brute force, not by the product.
fn spec_pairs() -> std::collections::BTreeSet<spec_pairs::Pair> {
    let records: Vec<serde_json::Value> = std::fs::read_to_string(NARROW).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (left, right) = (regex::Regex::new(r"^actSpeed_(C\d+)$").unwrap(), regex::Regex::new(r"^vaTorque_(C\d+)$").unwrap());
    spec_pairs::brute_force(&records, &left, &right, false, Some(spec_pairs::DEFAULT_HORIZON_MS))
}

/// Input records per quantity, and joined points: distinct thing and time
/// (the mean of the partners' times, the default policy) of the spec's
/// pairs, as two pairs with the same time are one point in InfluxDB. (The
/// joined topic is checked pair by pair where there is one.)
fn expected() -> BTreeMap<String, f64> {
    let mut want: BTreeMap<String, f64> = BTreeMap::new();
    for line in std::fs::read_to_string(NARROW).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        *want.entry(v["quantity"].as_str().unwrap().to_string()).or_default() += 1.0;
    }
    let points: std::collections::BTreeSet<(String, i64)> =
        spec_pairs().into_iter().map(|(thing, _, left_time, _, _, right_time, _)| (thing, (left_time + right_time).div_euclid(2))).collect();
    want.insert("derivedPower_C11".into(), points.len() as f64);
    want
}

/// Points per quantity in `db` (none while the database does not exist);
/// any other query error fails the test.
fn counts(influx: &InfluxDb, db: &str) -> BTreeMap<String, f64> {
    let answer = influx.query(db, "SELECT count(result) FROM machine GROUP BY quantity").expect("InfluxDB answers a query");
    if let Some(error) = answer.pointer("/results/0/error").and_then(|e| e.as_str()) {
        assert!(error.contains("database not found"), "query failed: {error}");
        return BTreeMap::new();
    }
    let mut got = BTreeMap::new();
    for series in answer.pointer("/results/0/series").and_then(|s| s.as_array()).cloned().unwrap_or_default() {
        let q = series["tags"]["quantity"].as_str().unwrap_or_default().to_string();
        got.insert(q, series["values"][0][1].as_f64().unwrap_or(0.0));
    }
    got
}

fn wait_for_counts(influx: &InfluxDb, db: &str, want: &BTreeMap<String, f64>) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = counts(influx, db);
        if &got == want {
            return;
        }
        assert!(Instant::now() < deadline, "InfluxDB has\n{got:?}\nwant\n{want:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn shared_file_present() -> bool {
    let present = Path::new(WIDE).exists();
    assert!(present || !millrace_testkit::in_ci(), "missing {WIDE}");
    present
}

/// The shared file in at `qos`, every quantity out in InfluxDB, and every
/// message acknowledged.
fn arrives_and_is_acknowledged(qos: u8) {
    if !shared_file_present() {
        return;
    }
    let mqtt = require!(Mosquitto::start());
    let influx = require!(InfluxDb::start());
    let dir = tempfile::tempdir().unwrap();
    let db = unique_name("e2e").replace('-', "_");
    let config = config_with_qos(dir.path(), &mqtt, &influx, &db, qos);
    let worker = Worker::start(&config);
    simulate(&mqtt, &["--file", WIDE, "--qos", &qos.to_string()]);
    wait_for_counts(&influx, &db, &expected());
    assert_eq!(worker.metric("millrace_records_in_total{stage=\"ingest\"}"), 5000.0);
    assert!(worker.stop().success());
    assert!(std::fs::read_to_string(dir.path().join("dead-letters.jsonl")).unwrap_or_default().is_empty());
    // Every message was acknowledged: the broker holds none for the
    // session, so a restarted worker (same session) receives nothing again.
    let restarted = Worker::start(&config);
    std::thread::sleep(Duration::from_secs(3));
    let redelivered = restarted.metric("millrace_records_in_total{stage=\"ingest\"}");
    assert_eq!(redelivered, 0.0, "the broker redelivered {redelivered} messages whose acknowledgement it never got");
    assert!(restarted.stop().success());
}

#[test]
fn machine_data_arrives_in_influxdb_quantity_by_quantity() {
    arrives_and_is_acknowledged(1);
}

#[test]
fn exactly_once_delivery_from_mqtt_is_acknowledged_too() {
    arrives_and_is_acknowledged(2);
}

#[test]
fn the_session_of_an_instance_scaled_away_is_drained_and_removed() {
    if !shared_file_present() {
        return;
    }
    let mqtt = require!(Mosquitto::start());
    let influx = require!(InfluxDb::start());
    let dir = tempfile::tempdir().unwrap();
    let db = unique_name("e2e").replace('-', "_");
    let config = config(dir.path(), &mqtt, &influx, &db);
    const IN: &str = "millrace_records_in_total{stage=\"ingest\"}";
    // Two instances share the subscription; ordinal 1 dies for good.
    let mut gone = Worker::start_as(&config, "line-ingest-1", &[]);
    let _ = gone.child.kill();
    let first = Worker::start_as(&config, "line-ingest-0", &[]);
    simulate(&mqtt, &["--file", WIDE]);
    let mut got = -1.0;
    wait_for(Duration::from_secs(30), "ingest to settle", || {
        let now = first.metric(IN);
        std::mem::replace(&mut got, now) == now && now > 0.0
    });
    assert!(got < 5000.0, "Mosquitto gives the offline session its share, so ordinal 0 got fewer than 5000: {got}");
    assert!(first.stop().success());
    // Scaled to one replica after two sessions: ordinal 0 drains ordinal 1's.
    let drainer = Worker::start_as(
        &config,
        "line-ingest-0",
        &[("MILLRACE_REPLICAS", "1"), ("MILLRACE_MQTT_SESSIONS", "2"), ("MILLRACE_DRAIN_DELAY_SECONDS", "1")],
    );
    let raw = |m: BTreeMap<String, f64>| m.into_iter().filter(|(q, _)| !q.starts_with("derivedPower")).collect::<BTreeMap<_, _>>();
    let want = raw(expected());
    wait_for(Duration::from_secs(60), "every raw quantity in InfluxDB", || raw(counts(&influx, &db)) == want);
    // The retired session left the shared subscription: everything of a
    // second round reaches the one instance.
    let before = drainer.metric(IN);
    simulate(&mqtt, &["--file", WIDE]);
    wait_for(Duration::from_secs(30), "all of the second round at ordinal 0", || drainer.metric(IN) == before + 5000.0);
    assert!(drainer.stop().success());
}

#[test]
fn a_broker_restart_and_an_influxdb_outage_lose_nothing() {
    if !shared_file_present() {
        return;
    }
    let mut mqtt = require!(Mosquitto::start());
    let mut influx = require!(InfluxDb::start());
    let dir = tempfile::tempdir().unwrap();
    let db = unique_name("outage").replace('-', "_");
    let worker = Worker::start(&config(dir.path(), &mqtt, &influx, &db));
    // First part, then the broker restarts under the worker.
    simulate(&mqtt, &["--file", WIDE, "--count", "2000"]);
    mqtt.restart().unwrap();
    wait_for(Duration::from_secs(30), "the worker to resubscribe", || {
        ureq::get(&format!("{}/readyz", worker.metrics)).call().is_ok() && worker.metric("millrace_errors_total{stage=\"ingest\",kind=\"mqtt_connection\"}") > 0.0
    });
    // InfluxDB goes away for 20 s while the rest arrives.
    influx.stop();
    // The simulator replays in time order, ties in file order: the same here.
    let mut rest: Vec<(i64, String)> = std::fs::read_to_string(WIDE)
        .unwrap()
        .lines()
        .map(|l| (serde_json::from_str::<serde_json::Value>(l).unwrap()["Timestamp"].as_i64().unwrap(), l.to_string()))
        .collect();
    rest.sort_by_key(|(t, _)| *t);
    let rest: Vec<String> = rest.into_iter().map(|(_, l)| l).collect();
    let rest_file = dir.path().join("rest.jsonl");
    std::fs::write(&rest_file, rest[2000..].join("\n")).unwrap();
    simulate(&mqtt, &["--file", rest_file.to_str().unwrap()]);
    std::thread::sleep(Duration::from_secs(20));
    influx.restart().unwrap();
    wait_for_counts(&influx, &db, &expected());
    assert!(worker.stop().success());
}

#[test]
fn bad_messages_go_to_the_dead_letters_and_the_good_ones_arrive() {
    let mqtt = require!(Mosquitto::start());
    let influx = require!(InfluxDb::start());
    let dir = tempfile::tempdir().unwrap();
    let db = unique_name("bad").replace('-', "_");
    let worker = Worker::start(&config(dir.path(), &mqtt, &influx, &db));
    let corpus: &[(&str, &str)] = &[
        (r#"{"Thing":"R1","Timestamp":1554096380000,"vaLoad_C11":1.0}"#, ""),
        ("{oops", "malformed_json"),
        (r#"{"Thing":"R1","Timestamp":1554096381000,"vaLoad_C11":2.0}"#, ""),
        (r#"[1,2,3]"#, "not_an_object"),
        (r#"{"Timestamp":1554096382000,"vaLoad_C11":3.0}"#, "missing_field"),
        (r#"{"Thing":"R1","Timestamp":1554096383000,"vaLoad_C11":NaN,"vaCurr_C11":4.0}"#, "non_finite_value"),
        (r#"{"Thing":"R1","Timestamp":"next tuesday","vaLoad_C11":5.0}"#, "bad_timestamp"),
        (r#"{"Thing":42,"Timestamp":1554096384000,"vaLoad_C11":6.0}"#, "wrong_type"),
        (r#"{"Thing":"R1","Timestamp":1554096385000,"vaLoad_C11":7.0}"#, ""),
    ];
    let file = dir.path().join("corpus.jsonl");
    let mut lines: Vec<String> = corpus.iter().map(|(m, _)| m.to_string()).collect();
    // One oversized message (the default limit is 256 KiB).
    lines.push(format!(r#"{{"Thing":"R1","Timestamp":1554096386000,"note":"{}"}}"#, "x".repeat(300_000)));
    std::fs::write(&file, lines.join("\n")).unwrap();
    simulate(&mqtt, &["--file", file.to_str().unwrap(), "--verbatim"]);

    let mut want = BTreeMap::new();
    want.insert("vaLoad_C11".to_string(), 3.0);
    want.insert("vaCurr_C11".to_string(), 1.0);
    wait_for_counts(&influx, &db, &want);
    // Each bad message counted once under its reason, by the stage that met it.
    for reason in corpus.iter().map(|(_, r)| *r).filter(|r| !r.is_empty()).chain(["oversized"]) {
        let counted = worker.metric(&format!("millrace_dead_letters_total{{stage=\"ingest\",reason=\"{reason}\"}}"));
        assert_eq!(counted, 1.0, "millrace_dead_letters_total for {reason}");
    }
    assert!(worker.stop().success());

    let letters: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("dead-letters.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut reasons: Vec<&str> = letters.iter().map(|l| l["reason"].as_str().unwrap()).collect();
    reasons.sort();
    let mut expected: Vec<&str> = corpus.iter().map(|(_, r)| *r).filter(|r| !r.is_empty()).chain(["oversized"]).collect();
    expected.sort();
    assert_eq!(reasons, expected);
    let malformed = letters.iter().find(|l| l["reason"] == "malformed_json").unwrap();
    assert_eq!(malformed["payload"], "{oops", "the original bytes are kept");
    assert!(malformed["source"].as_str().unwrap().starts_with("mqtt:machines/"));
}

/// Every connection of the pipeline over TLS, as a plant's would be:
/// Mosquitto on `mqtts://` requiring a client certificate and a login,
/// InfluxDB on `https://` with a user that may only write (Kafka over
/// SASL_SSL and mTLS: e2e_join_kafka.rs). The worker starts with the wrong
/// CA for the broker and a login InfluxDB does not know yet: it says which
/// endpoint fails and why, is not ready and writes nothing; once both
/// causes are fixed (the right CA in the file, the user created) it goes
/// on by itself and every record arrives.
#[test]
fn the_pipeline_over_tls_says_what_is_wrong_and_recovers_once_it_is_fixed() {
    if !shared_file_present() {
        return;
    }
    let (mqtt_user, mqtt_password) = ("machines", "mqtt-pw-7f3a");
    let mqtt = require!(Mosquitto::start_tls(mqtt_user, mqtt_password));
    let influx = require!(InfluxDb::start_https_with_auth());
    let dir = tempfile::tempdir().unwrap();
    let db = unique_name("tls").replace('-', "_");
    let admin = |q: &str| {
        let answer = influx.query("", q).unwrap();
        assert!(answer.pointer("/results/0/error").is_none(), "{q}: {answer}");
    };
    admin(&format!("CREATE DATABASE \"{db}\""));
    let worker_cert = mqtt.ca().client("worker").unwrap();
    let ca_file = dir.path().join("mqtt-ca.crt");
    let stranger = millrace_testkit::tls::TestCa::new(dir.path(), "stranger").unwrap();
    std::fs::copy(&stranger.certificate_file, &ca_file).unwrap();
    let config = dir.path().join("pipeline.yaml");
    std::fs::write(
        &config,
        format!(
            r#"mqtt:
  url: "{mqtt_url}"
  topics: ["machines/#"]
  clientId: "{client}"
  tls: {{caFile: "{ca}", certificateFile: "{cert}", keyFile: "{key}"}}
joins:
  - {{name: power, left: 'actSpeed_(C\d+)', right: 'vaTorque_(C\d+)', output: 'derivedPower_$1', expression: '2*pi/60*left*right'}}
influxdb:
  url: "{influx_url}"
  database: "{db}"
  batchSize: 2000
  flushInterval: 100ms
  tls: {{caFile: "{influx_ca}"}}
deadLetter: {{file: "{dead}"}}
"#,
            mqtt_url = mqtt.url(),
            client = unique_name("w"),
            ca = ca_file.display(),
            cert = worker_cert.certificate_file.display(),
            key = worker_cert.key_file.display(),
            influx_url = influx.url(),
            influx_ca = influx.ca().certificate_file.display(),
            dead = dir.path().join("dead-letters.jsonl").display(),
        ),
    )
    .unwrap();
    // The InfluxDB login from files, as from a mounted Secret.
    let (user_file, password_file) = (dir.path().join("influx-username"), dir.path().join("influx-password"));
    std::fs::write(&user_file, "writer\n").unwrap();
    std::fs::write(&password_file, "writer-pw-91c2\n").unwrap();
    let (user_file, password_file) = (user_file.display().to_string(), password_file.display().to_string());
    let env = [
        ("MILLRACE_INSTANCE", "tls"),
        ("MILLRACE_MQTT_USERNAME", mqtt_user),
        ("MILLRACE_MQTT_PASSWORD", mqtt_password),
        ("MILLRACE_INFLUXDB_USERNAME_FILE", user_file.as_str()),
        ("MILLRACE_INFLUXDB_PASSWORD_FILE", password_file.as_str()),
    ];
    let log = dir.path().join("worker.log");
    let worker = Worker::spawn(&config, None, &env, std::fs::File::create(&log).unwrap().into());
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for(Duration::from_secs(30), "the worker to say why it cannot reach either server", || {
        let t = text();
        t.contains(&mqtt.url()) && t.contains("UnknownIssuer") && t.contains(&influx.url()) && t.contains("401")
    });
    assert!(!worker.ready(), "ready without a broker it trusts");
    assert!(!text().contains(mqtt_password) && !text().contains("writer-pw-91c2"), "a password is in the log:\n{}", text());

    std::fs::copy(&mqtt.ca().certificate_file, &ca_file).unwrap();
    admin("CREATE USER writer WITH PASSWORD 'writer-pw-91c2'");
    admin(&format!("GRANT WRITE ON \"{db}\" TO writer"));
    wait_for(Duration::from_secs(30), "the worker to connect once its CA is right", || worker.ready());

    // The machines publish over TLS too, with a certificate of their own.
    let machines = mqtt.ca().client("machines").unwrap();
    let out = Command::new(WORKER)
        .args(["simulate", "--url", &mqtt.url(), "--rate", "0", "--file", WIDE])
        .arg("--ca-file")
        .arg(&mqtt.ca().certificate_file)
        .arg("--certificate-file")
        .arg(&machines.certificate_file)
        .arg("--key-file")
        .arg(&machines.key_file)
        .envs([("MILLRACE_MQTT_USERNAME", mqtt_user), ("MILLRACE_MQTT_PASSWORD", mqtt_password)])
        .output()
        .unwrap();
    assert!(out.status.success(), "simulate over TLS failed: {}", String::from_utf8_lossy(&out.stderr));
    wait_for_counts(&influx, &db, &expected());
    assert!(worker.stop().success());

    // Without a client certificate the broker refuses the machines.
    let out = Command::new(WORKER)
        .args(["simulate", "--url", &mqtt.url(), "--rate", "0", "--count", "1", "--machines", "1"])
        .arg("--ca-file")
        .arg(&mqtt.ca().certificate_file)
        .envs([("MILLRACE_MQTT_USERNAME", mqtt_user), ("MILLRACE_MQTT_PASSWORD", mqtt_password)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the broker took a client without a certificate: {stderr}");
}

/// The staged pipeline's configuration (topics created on `kafka`).
/// The staged pipeline's configuration and its joined topic.
fn staged_config(dir: &Path, mqtt: &Mosquitto, influx: &InfluxDb, kafka: &KafkaBroker, db: &str) -> (PathBuf, String) {
    let (raw, joined, dead) = (unique_name("raw"), unique_name("joined"), unique_name("dead"));
    kafka.create_topic(&raw, 3).unwrap();
    kafka.create_topic(&joined, 3).unwrap();
    kafka.create_topic(&dead, 1).unwrap();
    let path = config(dir, mqtt, influx, db);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "kafka:\n  bootstrapServers: \"{}\"\n  groupId: \"{}\"\n  topics:\n    raw: {{name: \"{raw}\", partitions: 3}}\n    joined: {{name: \"{joined}\", partitions: 3}}\n    deadLetter: {{name: \"{dead}\", partitions: 1}}\n",
        kafka.bootstrap_servers(),
        unique_name("g")
    ));
    std::fs::write(&path, text).unwrap();
    (path, joined)
}

#[test]
fn machine_data_flows_through_three_stages_on_kafka() {
    if !shared_file_present() {
        return;
    }
    let mqtt = require!(Mosquitto::start());
    let influx = require!(InfluxDb::start());
    let kafka = require!(KafkaBroker::start());
    let dir = tempfile::tempdir().unwrap();
    let db = unique_name("staged").replace('-', "_");
    let (path, joined) = staged_config(dir.path(), &mqtt, &influx, &kafka, &db);
    let export = Worker::start_stage(&path, Some("export"));
    let join = Worker::start_stage(&path, Some("join"));
    let ingest = Worker::start_stage(&path, Some("ingest"));
    simulate(&mqtt, &["--file", WIDE]);
    wait_for_counts(&influx, &db, &expected());
    for w in [ingest, join, export] {
        assert!(w.stop().success());
    }
    assert_exactly_the_spec_pairs(&kafka.bootstrap_servers(), &joined);
}

/// The joined topic (committed records) holds every pair of the spec once
/// and nothing else: what InfluxDB's merged points cannot show.
fn assert_exactly_the_spec_pairs(servers: &str, topic: &str) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", unique_name("pairs"))
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30)).unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    // Read until every partition reached its end (transaction markers and
    // aborted records included, which an offset count would not tell).
    let mut at_end = std::collections::BTreeSet::new();
    let mut pairs: BTreeMap<spec_pairs::Pair, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_end.len() < tpl.count() {
        assert!(Instant::now() < deadline, "the joined topic {topic} was not read to its end within 60 s");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                *pairs.entry(spec_pairs::pair_of(&v)).or_default() += 1;
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    let want = spec_pairs();
    let doubled = pairs.values().filter(|n| **n > 1).count();
    let missing = want.iter().filter(|p| !pairs.contains_key(*p)).count();
    let extra = pairs.keys().filter(|p| !want.contains(*p)).count();
    assert_eq!((doubled, missing, extra), (0, 0, 0), "joined topic against the spec's {} pairs: {doubled} doubled, {missing} missing, {extra} not pairs", want.len());
}

/// InfluxDB with authentication and a user that may only write, as a plant's
/// database admin hands out: only an admin may `CREATE DATABASE`. Until the
/// database exists the export stage waits, not ready, and says why; it never
/// exits into a crash loop. Once an admin creates the database and grants
/// the write, everything arrives.
#[test]
fn an_influxdb_user_that_may_only_write_works_once_its_database_exists() {
    if !shared_file_present() {
        return;
    }
    let mqtt = require!(Mosquitto::start());
    let influx = require!(InfluxDb::start_with_auth());
    let kafka = require!(KafkaBroker::start());
    let dir = tempfile::tempdir().unwrap();
    let db = unique_name("writeonly").replace('-', "_");
    let (path, _) = staged_config(dir.path(), &mqtt, &influx, &kafka, &db);
    let admin = |q: &str| {
        let answer = influx.query("", q).unwrap();
        assert!(answer.pointer("/results/0/error").is_none(), "{q}: {answer}");
    };
    admin("CREATE USER writer WITH PASSWORD 'writer-pw'");
    let writer = [("MILLRACE_INSTANCE", "e2e"), ("MILLRACE_INFLUXDB_USERNAME", "writer"), ("MILLRACE_INFLUXDB_PASSWORD", "writer-pw")];
    let log = dir.path().join("export.log");
    let mut export = Worker::spawn(&path, Some("export"), &writer, std::fs::File::create(&log).unwrap().into());
    wait_for(Duration::from_secs(30), "the export stage to say the database is missing", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("has no database") && text.contains(&db) && text.contains("CREATE DATABASE needs admin privilege")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(export.child.try_wait().unwrap().is_none(), "the export stage exited: {}", std::fs::read_to_string(&log).unwrap());
    assert!(!export.ready(), "the export stage says it is ready without a database to write to");
    assert!(!std::fs::read_to_string(&log).unwrap().contains("writer-pw"), "the password is in the log");

    admin(&format!("CREATE DATABASE \"{db}\""));
    admin(&format!("GRANT WRITE ON \"{db}\" TO writer"));
    wait_for(Duration::from_secs(30), "the export stage to become ready", || export.ready());
    let join = Worker::start_stage(&path, Some("join"));
    let ingest = Worker::start_stage(&path, Some("ingest"));
    simulate(&mqtt, &["--file", WIDE]);
    wait_for_counts(&influx, &db, &expected());
    for w in [ingest, join, export] {
        assert!(w.stop().success());
    }
}

/// A narrow record as thing, quantity, time and the bits of its result:
/// the same record however its JSON writes the number.
fn narrow_key(v: &serde_json::Value) -> String {
    format!("{} {} {} {:x}", v["thing"], v["quantity"], v["phenomenonTime"], v["result"].as_f64().unwrap().to_bits())
}

/// Every record of `topic` (read_uncommitted, from the beginning) by
/// `narrow_key`, counted.
fn topic_records(servers: &str, topic: &str) -> BTreeMap<String, usize> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", unique_name("count"))
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30)).unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut end = 0;
    for p in metadata.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning).unwrap();
        end += consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap().1;
    }
    consumer.assign(&tpl).unwrap();
    let mut records = BTreeMap::new();
    let (mut read, deadline) = (0, Instant::now() + Duration::from_secs(60));
    while read < end && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            *records.entry(narrow_key(&v)).or_default() += 1;
            read += 1;
        }
    }
    records
}

/// A Kafka under a fault test: where it is, how its topics are made, and
/// the fault, begun while machine data flows and ended 8 s later.
trait KafkaFault {
    fn servers(&self) -> String;
    /// Makes a topic, replicated as this Kafka can.
    fn create(&self, topic: &str, partitions: i32);
    fn replication(&self) -> i32;
    fn begin(&mut self, raw: &str);
    fn end(&mut self);
}

/// The single broker stopped (SIGTERM), then started on the same data.
struct SingleBrokerDown(KafkaBroker);

impl KafkaFault for SingleBrokerDown {
    fn servers(&self) -> String {
        self.0.bootstrap_servers()
    }
    fn create(&self, topic: &str, partitions: i32) {
        self.0.create_topic(topic, partitions).unwrap();
    }
    fn replication(&self) -> i32 {
        1
    }
    fn begin(&mut self, _raw: &str) {
        self.0.stop();
    }
    fn end(&mut self) {
        self.0.restart().unwrap();
    }
}

/// In a three-broker cluster (replication 3, min.insync.replicas 2), the
/// leader of the raw partition with the most data SIGKILLed, then started.
struct LeaderKilled(KafkaCluster, Option<usize>);

impl KafkaFault for LeaderKilled {
    fn servers(&self) -> String {
        self.0.bootstrap_servers()
    }
    fn create(&self, topic: &str, partitions: i32) {
        self.0.create_topic(topic, partitions).unwrap();
    }
    fn replication(&self) -> i32 {
        3
    }
    fn begin(&mut self, raw: &str) {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let client: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", self.servers()).create().unwrap();
        let metadata = client.fetch_metadata(Some(raw), Duration::from_secs(10)).unwrap();
        let partition = (0..3).max_by_key(|p| client.fetch_watermarks(raw, *p, Duration::from_secs(10)).unwrap().1).unwrap();
        let leader = metadata.topics()[0].partitions().iter().find(|p| p.id() == partition).unwrap().leader();
        let port = metadata.brokers().iter().find(|b| b.id() == leader).unwrap().port() as u16;
        let node = (0..KafkaCluster::NODES).find(|&i| self.0.port(i) == port).unwrap();
        self.0.kill_node(node);
        self.1 = Some(node);
    }
    fn end(&mut self) {
        self.0.restart_node(self.1.take().unwrap()).unwrap();
    }
}

/// The three stages on Kafka through `kafka`'s fault, begun after the first
/// 2,000 messages and ended 8 s later while the rest flows; a stage that
/// exits is started again, as Kubernetes would. The raw topic then holds
/// every narrow record exactly once (ingest lost and doubled nothing), and
/// InfluxDB every quantity and joined point (export).
fn three_stages_through(kafka: &mut dyn KafkaFault) {
    let mqtt = require!(Mosquitto::start());
    let influx = require!(InfluxDb::start());
    let servers = kafka.servers();
    let dir = tempfile::tempdir().unwrap();
    let db = unique_name("fault").replace('-', "_");
    let (raw, joined, dead) = (unique_name("raw"), unique_name("joined"), unique_name("dead"));
    kafka.create(&raw, 3);
    kafka.create(&joined, 3);
    kafka.create(&dead, 1);
    let path = config(dir.path(), &mqtt, &influx, &db);
    let mut text = std::fs::read_to_string(&path).unwrap();
    let rf = kafka.replication();
    text.push_str(&format!(
        "kafka:\n  bootstrapServers: \"{servers}\"\n  groupId: \"{}\"\n  topics:\n    raw: {{name: \"{raw}\", partitions: 3, replicationFactor: {rf}}}\n    joined: {{name: \"{joined}\", partitions: 3, replicationFactor: {rf}}}\n    deadLetter: {{name: \"{dead}\", partitions: 1, replicationFactor: {rf}}}\n",
        unique_name("g")
    ));
    std::fs::write(&path, text).unwrap();
    let stages = ["export", "join", "ingest"];
    let mut workers: Vec<Worker> = stages.iter().map(|s| Worker::start_stage(&path, Some(s))).collect();
    let mut exits: Vec<String> = Vec::new();
    let supervise = |workers: &mut Vec<Worker>, exits: &mut Vec<String>| {
        for (i, w) in workers.iter_mut().enumerate() {
            if let Some(status) = w.child.try_wait().unwrap() {
                exits.push(format!("{} {status}", stages[i]));
                assert!(exits.len() <= 10, "stages exited more than 10 times: {exits:?}");
                *w = Worker::start_stage(&path, Some(stages[i]));
            }
        }
    };

    // The first 2,000 messages, then the fault while the rest flows.
    let mut lines: Vec<(i64, String)> = std::fs::read_to_string(WIDE)
        .unwrap()
        .lines()
        .map(|l| (serde_json::from_str::<serde_json::Value>(l).unwrap()["Timestamp"].as_i64().unwrap(), l.to_string()))
        .collect();
    lines.sort_by_key(|(t, _)| *t);
    let (first, rest) = (dir.path().join("first.jsonl"), dir.path().join("rest.jsonl"));
    std::fs::write(&first, lines[..2000].iter().map(|l| l.1.as_str()).collect::<Vec<_>>().join("\n")).unwrap();
    std::fs::write(&rest, lines[2000..].iter().map(|l| l.1.as_str()).collect::<Vec<_>>().join("\n")).unwrap();
    simulate(&mqtt, &["--file", first.to_str().unwrap()]);
    kafka.begin(&raw);
    let publisher = {
        let (url, rest) = (mqtt.url(), rest.to_str().unwrap().to_string());
        std::thread::spawn(move || {
            let out = Command::new(WORKER).args(["simulate", "--url", &url, "--rate", "1000", "--file", &rest]).output().unwrap();
            assert!(out.status.success(), "simulate failed: {}", String::from_utf8_lossy(&out.stderr));
        })
    };
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(8) {
        supervise(&mut workers, &mut exits);
        std::thread::sleep(Duration::from_millis(200));
    }
    kafka.end();
    while !publisher.is_finished() {
        supervise(&mut workers, &mut exits);
        std::thread::sleep(Duration::from_millis(200));
    }
    publisher.join().unwrap();
    let want = expected();
    let deadline = Instant::now() + Duration::from_secs(120);
    while counts(&influx, &db) != want {
        supervise(&mut workers, &mut exits);
        assert!(Instant::now() < deadline, "InfluxDB has\n{:?}\nwant\n{want:?}\nstage exits: {exits:?}", counts(&influx, &db));
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut narrow: BTreeMap<String, usize> = BTreeMap::new();
    for line in std::fs::read_to_string(NARROW).unwrap().lines() {
        *narrow.entry(narrow_key(&serde_json::from_str::<serde_json::Value>(line).unwrap())).or_default() += 1;
    }
    let in_raw = topic_records(&servers, &raw);
    let doubled = in_raw.values().filter(|n| **n > 1).count();
    let missing = narrow.keys().filter(|k| !in_raw.contains_key(*k)).count();
    eprintln!("stage exits: {exits:?}; raw topic: {} records, {} distinct", in_raw.values().sum::<usize>(), in_raw.len());
    assert_eq!((doubled, missing), (0, 0), "raw topic: {doubled} records doubled, {missing} missing");
    assert_eq!(in_raw, narrow);
    for w in workers {
        assert!(w.stop().success());
    }
    assert_exactly_the_spec_pairs(&servers, &joined);
}

#[test]
fn three_stages_survive_the_kafka_broker_down_for_8_seconds() {
    if !shared_file_present() {
        return;
    }
    three_stages_through(&mut SingleBrokerDown(require!(KafkaBroker::start())));
}

#[test]
fn three_stages_survive_the_raw_leader_killed_in_a_three_broker_cluster() {
    if !shared_file_present() {
        return;
    }
    three_stages_through(&mut LeaderKilled(require!(KafkaCluster::start()), None));
}
