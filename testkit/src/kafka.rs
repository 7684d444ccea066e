//! Apache Kafka 4.4.0 (KRaft, combined broker + controller) on loopback
//! ports: one node ([`KafkaBroker`]) or three ([`KafkaCluster`]).
//!
//! The jars come from `scripts/harness/kafka-fetch.sh` (into
//! `$MILLRACE_CACHE/kafka-4.4.0/lib`) and run on the machine's `java`. Every
//! instance gets fresh ports and a fresh data dir, formatted with
//! `kafka.tools.StorageTool` before its first start.
//!
//! JVM start dominates on small machines, so the JVM runs C1 only and maps a
//! class-data-sharing archive kept next to the jars, keyed by a hash of
//! `java -version`. The first broker that finds no archive writes one on its
//! clean stop (to a temporary name, renamed when complete; one writer at a
//! time, guarded by a lock file).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::process::{free_port, new_dir, port_open, Dir, Server};
use crate::{find_binary, StartError};

const KAFKA_VERSION: &str = "4.4.0";
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// A stop that also writes the CDS archive takes 5-15 s longer.
const STOP_GRACE: Duration = Duration::from_secs(20);
const STOP_GRACE_ARCHIVING: Duration = Duration::from_secs(60);

const LOG4J2: &str = "\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.request.name = kafka.request.logger
logger.request.level = WARN
";

fn kafka_home() -> PathBuf {
    let cache = std::env::var_os("MILLRACE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/millrace")))
        .unwrap_or_else(|| PathBuf::from(".cache/millrace"));
    cache.join(format!("kafka-{KAFKA_VERSION}"))
}

/// `java` and the jar directory, or why not.
struct Runtime {
    java: PathBuf,
    classpath: String,
    /// `cds-<hash of java -version>.jsa` in `home`.
    archive: PathBuf,
}

fn runtime() -> Result<&'static Runtime, StartError> {
    static RUNTIME: OnceLock<Result<Runtime, (String, String)>> = OnceLock::new();
    let r = RUNTIME.get_or_init(|| {
        let home = kafka_home();
        let lib = home.join("lib");
        if !lib.join(format!("kafka_2.13-{KAFKA_VERSION}.jar")).is_file() || !home.join("lib.complete").exists() {
            return Err((format!("Apache Kafka {KAFKA_VERSION} jars"), "run scripts/deps.sh".to_string()));
        }
        let java = find_binary("java").map_err(|_| ("java".to_string(), "run scripts/deps.sh".to_string()))?;
        let version = Command::new(&java)
            .arg("-version")
            .stdin(Stdio::null())
            .output()
            .map(|o| [o.stdout, o.stderr].concat())
            .unwrap_or_default();
        let mut h = DefaultHasher::new();
        version.hash(&mut h);
        java.hash(&mut h);
        let archive = home.join(format!("cds-{:016x}.jsa", h.finish()));
        Ok(Runtime { java, classpath: format!("{}/*", lib.display()), archive })
    });
    r.as_ref().map_err(|(tool, hint)| StartError::Missing { tool: tool.clone(), hint: hint.clone() })
}

/// A Kafka Uuid as `kafka-storage random-uuid` prints it (22 base64url chars).
fn random_uuid() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    loop {
        let bytes: [u8; 16] = rand::random();
        let mut out = String::with_capacity(22);
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
            }
        }
        if !out.starts_with('-') && bytes != [0; 16] {
            return out;
        }
    }
}

/// Who writes the CDS archive: a lock file holding the writer's pid.
struct ArchiveWriter {
    lock: PathBuf,
    tmp: PathBuf,
    target: PathBuf,
}

impl ArchiveWriter {
    fn claim(rt: &Runtime) -> Option<Self> {
        if rt.archive.exists() {
            return None;
        }
        let lock = rt.archive.with_extension("jsa.lock");
        let take = |lock: &Path| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(lock)
                .and_then(|mut f| std::io::Write::write_all(&mut f, std::process::id().to_string().as_bytes()))
                .is_ok()
        };
        if !take(&lock) {
            // A writer that died leaves its lock behind.
            let holder = std::fs::read_to_string(&lock).ok().and_then(|s| s.trim().parse::<u32>().ok());
            let alive = holder.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if alive || holder.is_none() && lock_is_fresh(&lock) {
                return None;
            }
            let _ = std::fs::remove_file(&lock);
            if !take(&lock) {
                return None;
            }
        }
        let tmp = rt.archive.with_extension(format!("jsa.tmp-{}-{}", std::process::id(), rand::random::<u32>()));
        Some(Self { lock, tmp, target: rt.archive.clone() })
    }

    /// After a clean exit: move the archive into place.
    fn finish(self, clean: bool) {
        if clean && std::fs::metadata(&self.tmp).is_ok_and(|m| m.len() > 0) {
            let _ = std::fs::rename(&self.tmp, &self.target);
        }
    }
}

fn lock_is_fresh(lock: &Path) -> bool {
    std::fs::metadata(lock)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < Duration::from_secs(300))
}

impl Drop for ArchiveWriter {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// The JVM options for one run: heap, C1 only, and the CDS archive (mapped
/// if present, else written by the one process that claims it).
fn jvm_options(rt: &Runtime, heap: &str, writer: Option<&ArchiveWriter>) -> Vec<String> {
    let mut opts = vec![
        format!("-Xmx{heap}"),
        format!("-Xms{heap}"),
        "-XX:+UseG1GC".into(),
        "-XX:TieredStopAtLevel=1".into(),
        "-Xshare:auto".into(),
        "-Djava.awt.headless=true".into(),
    ];
    if let Some(w) = writer {
        opts.push(format!("-XX:ArchiveClassesAtExit={}", w.tmp.display()));
    } else if rt.archive.exists() {
        opts.push(format!("-XX:SharedArchiveFile={}", rt.archive.display()));
    }
    opts
}

/// One combined broker + controller.
struct Node {
    id: u32,
    broker_port: u16,
    dir: PathBuf,
    server: Option<Server>,
    writer: Option<ArchiveWriter>,
}

struct NodeSpec {
    id: u32,
    broker_port: u16,
    controller_port: u16,
    dir: PathBuf,
    directory_id: String,
    secure: Option<SecureListeners>,
}

/// A broker's secured listeners beside its plaintext one (which the
/// harness itself uses): `SASL_SSL` with SCRAM-SHA-512, SCRAM-SHA-256 and
/// PLAIN, and `SSL` that requires a client certificate, both with a server certificate for
/// 127.0.0.1 from a CA made for the broker.
#[derive(Clone, Debug)]
pub struct SecureListeners {
    /// `127.0.0.1:port` of the SASL_SSL listener: SCRAM-SHA-512,
    /// SCRAM-SHA-256 and PLAIN, one user for all three.
    pub sasl_ssl: String,
    /// `127.0.0.1:port` of the SSL listener that requires a client certificate.
    pub mtls: String,
    /// The CA that signed the broker's certificate and the client's.
    pub ca_file: PathBuf,
    /// A client certificate the mTLS listener accepts, and its key.
    pub client: crate::tls::Pem,
    /// A CA that signed nothing here (a wrong CA for a client).
    pub other_ca_file: PathBuf,
    /// The SCRAM user made when the storage was formatted.
    pub username: String,
    pub password: String,
    server: crate::tls::Pem,
}

/// A PEM text as one properties-file value: Java's `Properties` turns the
/// `\n` escapes back into line breaks.
fn pem_value(pem: &str) -> String {
    pem.trim_end().replace('\n', "\\n")
}

fn properties(spec: &NodeSpec, quorum: &str, replicas: usize) -> String {
    let (rf, isr) = if replicas >= 3 { (3, 2) } else { (1, 1) };
    let mut p = format!(
        "process.roles=broker,controller
node.id={id}
controller.quorum.bootstrap.servers={quorum}
listeners=PLAINTEXT://127.0.0.1:{bp},CONTROLLER://127.0.0.1:{cp}
advertised.listeners=PLAINTEXT://127.0.0.1:{bp},CONTROLLER://127.0.0.1:{cp}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={dir}/logs
metadata.log.dir={dir}/meta
num.partitions=1
default.replication.factor={rf}
offsets.topic.replication.factor={rf}
offsets.topic.num.partitions=3
transaction.state.log.replication.factor={rf}
transaction.state.log.min.isr={isr}
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor={rf}
share.coordinator.state.topic.min.isr={isr}
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.segment.bytes=16777216
log.retention.check.interval.ms=30000
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.cleaner.dedupe.buffer.size=16777216
log.cleaner.threads=1
group.consumer.min.heartbeat.interval.ms=1000
group.consumer.heartbeat.interval.ms=1000
group.consumer.min.session.timeout.ms=6000
group.consumer.session.timeout.ms=10000
",
        id = spec.id,
        bp = spec.broker_port,
        cp = spec.controller_port,
        dir = spec.dir.display(),
    );
    if replicas >= 3 {
        p.push_str("min.insync.replicas=2\nbroker.session.timeout.ms=6000\nbroker.heartbeat.interval.ms=1000\n");
    }
    if let Some(s) = &spec.secure {
        let (sasl, mtls) = (&s.sasl_ssl, &s.mtls);
        p = p
            .replace(
                &format!("listeners=PLAINTEXT://127.0.0.1:{}", spec.broker_port),
                &format!("listeners=PLAINTEXT://127.0.0.1:{},SASL_SSL://{sasl},MTLS://{mtls}", spec.broker_port),
            )
            .replace("listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT", "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,MTLS:SSL");
        p.push_str(&format!(
            "sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_{user}=\"{password}\";
listener.name.mtls.ssl.client.auth=required
ssl.keystore.type=PEM
ssl.keystore.certificate.chain={chain}
ssl.keystore.key={key}
ssl.truststore.type=PEM
ssl.truststore.certificates={ca}
",
            user = s.username,
            password = s.password,
            chain = pem_value(&s.server.certificate),
            key = pem_value(&s.server.key),
            ca = pem_value(&std::fs::read_to_string(&s.ca_file).unwrap_or_default()),
        ));
        // advertised.listeners: the same as listeners for the secured ones.
        p = p.replace(
            &format!("advertised.listeners=PLAINTEXT://127.0.0.1:{}", spec.broker_port),
            &format!("advertised.listeners=PLAINTEXT://127.0.0.1:{},SASL_SSL://{sasl},MTLS://{mtls}", spec.broker_port),
        );
    }
    p
}

/// Writes the node's files and formats its storage (output to format.log).
fn format_node(rt: &Runtime, spec: &NodeSpec, quorum: &str, replicas: usize, cluster_id: &str, initial: Option<&str>) -> Result<(), StartError> {
    std::fs::write(spec.dir.join("server.properties"), properties(spec, quorum, replicas))?;
    std::fs::write(spec.dir.join("log4j2.properties"), LOG4J2)?;
    let log = std::fs::File::create(spec.dir.join("format.log"))?;
    let mut cmd = Command::new(&rt.java);
    cmd.args(jvm_options(rt, "128m", None))
        .arg("-cp")
        .arg(&rt.classpath)
        .arg(format!("-Dlog4j2.configurationFile={}", spec.dir.join("log4j2.properties").display()))
        .args(["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c"])
        .arg(spec.dir.join("server.properties"));
    match initial {
        Some(controllers) => cmd.args(["--initial-controllers", controllers]),
        None => cmd.arg("--standalone"),
    };
    if let Some(s) = &spec.secure {
        // The SCRAM user, written with the first metadata (format.log,
        // which holds its salted keys, stays in the broker's directory).
        for mechanism in ["SCRAM-SHA-512", "SCRAM-SHA-256"] {
            cmd.args(["--add-scram", &format!("{mechanism}=[name={},password={}]", s.username, s.password)]);
        }
    }
    let status = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .map_err(|e| StartError::Failed(format!("cannot run java: {e}")))?;
    if !status.success() {
        let text = std::fs::read_to_string(spec.dir.join("format.log")).unwrap_or_default();
        return Err(StartError::Failed(format!("kafka StorageTool format failed ({status}):\n{text}")));
    }
    Ok(())
}

impl Node {
    fn new(spec: &NodeSpec) -> Self {
        Self {
            id: spec.id,
            broker_port: spec.broker_port,
            dir: spec.dir.clone(),
            server: None,
            writer: None,
        }
    }

    fn spawn(&mut self, heap: &str) -> Result<(), StartError> {
        let rt = runtime()?;
        if self.writer.is_none() {
            self.writer = ArchiveWriter::claim(rt);
        }
        let mut args = jvm_options(rt, heap, self.writer.as_ref());
        args.extend([
            format!("-Dlog4j2.configurationFile={}", self.dir.join("log4j2.properties").display()),
            "-cp".into(),
            rt.classpath.clone(),
            "kafka.Kafka".into(),
            self.dir.join("server.properties").display().to_string(),
        ]);
        let server = Server::spawn(&format!("kafka node {}", self.id), &rt.java, &args, self.dir.join("server.log"))?;
        self.server = Some(server);
        Ok(())
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.broker_port)
    }

    fn wait_ready(&mut self, servers: &str, brokers: usize) -> Result<(), StartError> {
        let port = self.broker_port;
        let server = self.server.as_mut().ok_or_else(|| StartError::Failed("kafka node is not running".into()))?;
        server.wait_until(READY_TIMEOUT, || port_open(port) && broker_count(servers) == Some(brokers))
    }

    fn terminate(&self) {
        if let Some(s) = self.server.as_ref() {
            s.terminate();
        }
    }

    fn grace(&self) -> Duration {
        if self.writer.is_some() {
            STOP_GRACE_ARCHIVING
        } else {
            STOP_GRACE
        }
    }

    /// After `terminate`: waits, SIGKILLs what is left, and keeps the CDS
    /// archive if this node wrote one and exited cleanly.
    fn finish_stop(&mut self, deadline: Instant) {
        if let Some(mut s) = self.server.take() {
            let clean = s.wait_exit(deadline);
            s.kill();
            if let Some(w) = self.writer.take() {
                w.finish(clean);
            }
        }
    }

    fn stop(&mut self) {
        self.terminate();
        let deadline = Instant::now() + self.grace();
        self.finish_stop(deadline);
    }

    fn kill(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.kill();
        }
        // A killed JVM writes no archive; the next start may claim it again.
        self.writer = None;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The node that writes the archive stops cleanly once, so that the
        // archive exists for every later start; all others are killed.
        if self.writer.is_some() && self.server.is_some() {
            self.stop();
        }
        self.kill();
    }
}

/// How many brokers a Metadata request reports, if it answers.
fn broker_count(servers: &str) -> Option<usize> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", servers).create().ok()?;
    let md = consumer.fetch_metadata(None, Duration::from_secs(2)).ok()?;
    Some(md.brokers().len())
}

fn create_topic(servers: &str, name: &str, partitions: i32, replicas: i32, configs: &[(&str, &str)]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", servers).create()?;
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replicas));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    // Admin futures complete on librdkafka's thread: no runtime needed.
    let results = futures::executor::block_on(admin.create_topics([&topic], &options))?;
    for result in results {
        if let Err((topic, code)) = result {
            anyhow::bail!("cannot create topic {topic}: {code}");
        }
    }
    // The controller has it; wait until the brokers serve every partition.
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", servers).create()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(md) = consumer.fetch_metadata(Some(name), Duration::from_secs(2)) {
            if let Some(t) = md.topics().iter().find(|t| t.name() == name) {
                let ready = t.error().is_none()
                    && t.partitions().len() == partitions as usize
                    && t.partitions().iter().all(|p| p.leader() >= 0 && p.isr().len() == replicas as usize);
                if ready {
                    return Ok(());
                }
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "topic {name} not served by all brokers within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A single-node Apache Kafka (KRaft, combined) with a fresh data dir; or,
/// with `MILLRACE_KAFKA_BOOTSTRAP=host:port` set, a Kafka of your own
/// (the tests name every topic and group uniquely; a test that stops, kills
/// or restarts the broker fails there with a message that says so).
pub struct KafkaBroker {
    node: Option<Node>,
    bootstrap: String,
    _dir: Option<Dir>,
    secure: Option<SecureListeners>,
}

/// The environment variable naming a Kafka of your own for the tests.
pub const KAFKA_BOOTSTRAP_ENV: &str = "MILLRACE_KAFKA_BOOTSTRAP";

impl KafkaBroker {
    pub fn start() -> Result<Self, StartError> {
        if let Some(bootstrap) = std::env::var(KAFKA_BOOTSTRAP_ENV).ok().filter(|v| !v.trim().is_empty()) {
            eprintln!("kafka: using yours at {bootstrap} ({KAFKA_BOOTSTRAP_ENV})");
            return Ok(Self { node: None, bootstrap, _dir: None, secure: None });
        }
        Self::start_with(false)
    }

    /// A broker with [`SecureListeners`] as well (never a Kafka of yours:
    /// the test needs its certificates and user).
    pub fn start_secured() -> Result<Self, StartError> {
        Self::start_with(true)
    }

    /// The secured listeners of a [`KafkaBroker::start_secured`] broker.
    pub fn secure(&self) -> &SecureListeners {
        self.secure.as_ref().expect("a broker from KafkaBroker::start_secured")
    }

    fn start_with(secured: bool) -> Result<Self, StartError> {
        let rt = runtime()?;
        let started = Instant::now();
        let dir = new_dir("kafka")?;
        let secure = if secured {
            let ca = crate::tls::TestCa::new(&dir, "kafka")?;
            let other = crate::tls::TestCa::new(&dir, "other")?;
            use rand::distr::{Alphanumeric, SampleString};
            Some(SecureListeners {
                sasl_ssl: format!("127.0.0.1:{}", free_port()),
                mtls: format!("127.0.0.1:{}", free_port()),
                ca_file: ca.certificate_file.clone(),
                client: ca.client("millrace-worker")?,
                other_ca_file: other.certificate_file.clone(),
                username: "millrace".into(),
                password: Alphanumeric.sample_string(&mut rand::rng(), 20),
                server: ca.server("kafka")?,
            })
        } else {
            None
        };
        let spec = NodeSpec {
            id: 1,
            broker_port: free_port(),
            controller_port: free_port(),
            dir: dir.clone(),
            directory_id: random_uuid(),
            secure: secure.clone(),
        };
        let quorum = format!("127.0.0.1:{}", spec.controller_port);
        let node = Node::new(&spec);
        let bootstrap = node.bootstrap();
        let mut broker = Self { node: Some(node), bootstrap, _dir: Some(Dir(dir)), secure };
        format_node(rt, &spec, &quorum, 1, &random_uuid(), None)?;
        let formatted = started.elapsed();
        broker.own("start").spawn("256m")?;
        broker.wait_ready()?;
        eprintln!(
            "kafka: broker on {} ready in {:.1?} (format {formatted:.1?}; CDS archive {})",
            broker.bootstrap_servers(),
            started.elapsed(),
            if broker.own("start").writer.is_some() { "being written" } else if rt.archive.exists() { "mapped" } else { "absent" }
        );
        Ok(broker)
    }

    /// The broker process this harness runs; a test that needs it cannot
    /// run against a Kafka of yours.
    fn own(&mut self, what: &str) -> &mut Node {
        let bootstrap = self.bootstrap.clone();
        self.node.as_mut().unwrap_or_else(|| {
            panic!("this test must {what} the broker, which it cannot do to yours at {bootstrap}: unset {KAFKA_BOOTSTRAP_ENV} for it")
        })
    }

    fn wait_ready(&mut self) -> Result<(), StartError> {
        let servers = self.bootstrap_servers();
        self.own("start").wait_ready(&servers, 1)
    }

    pub fn port(&self) -> u16 {
        match &self.node {
            Some(node) => node.broker_port,
            None => self.bootstrap.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(9092),
        }
    }

    /// `127.0.0.1:PORT` (or yours)
    pub fn bootstrap_servers(&self) -> String {
        self.bootstrap.clone()
    }

    /// Creates a topic and waits until the broker serves all its partitions.
    pub fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        create_topic(&self.bootstrap_servers(), name, partitions, 1, &[])
    }

    /// The same, with topic configs (e.g. `retention.ms`).
    pub fn create_topic_with(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) -> anyhow::Result<()> {
        create_topic(&self.bootstrap_servers(), name, partitions, 1, configs)
    }

    /// Stops it gracefully (SIGTERM), as a restart by an operator would.
    pub fn stop(&mut self) {
        self.own("stop").stop();
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.own("kill").kill();
    }

    /// Starts it again on the same ports with the same data.
    pub fn restart(&mut self) -> Result<(), StartError> {
        self.own("restart").stop();
        self.own("restart").spawn("256m")?;
        self.wait_ready()
    }

    /// The server log, for a failing test's message (empty for yours).
    pub fn log_tail(&self) -> String {
        self.node.as_ref().and_then(|n| n.server.as_ref()).map(|s| s.log_tail()).unwrap_or_default()
    }
}

/// Three combined Apache Kafka nodes: replication factor 3 and
/// min.insync.replicas 2 (internal topics and the default), brokers fenced
/// 6 s after they stop heartbeating.
pub struct KafkaCluster {
    nodes: Vec<Node>,
    _dir: Dir,
}

impl KafkaCluster {
    pub const NODES: usize = 3;

    pub fn start() -> Result<Self, StartError> {
        let rt = runtime()?;
        let started = Instant::now();
        let dir = new_dir("kafka3")?;
        let specs: Vec<NodeSpec> = (1..=Self::NODES as u32)
            .map(|id| {
                let d = dir.join(format!("node{id}"));
                std::fs::create_dir_all(&d)?;
                Ok(NodeSpec { id, broker_port: free_port(), controller_port: free_port(), dir: d, directory_id: random_uuid(), secure: None })
            })
            .collect::<Result<_, std::io::Error>>()?;
        let quorum = specs.iter().map(|s| format!("127.0.0.1:{}", s.controller_port)).collect::<Vec<_>>().join(",");
        let initial = specs
            .iter()
            .map(|s| format!("{}@127.0.0.1:{}:{}", s.id, s.controller_port, s.directory_id))
            .collect::<Vec<_>>()
            .join(",");
        let cluster_id = random_uuid();
        let mut cluster = Self { nodes: specs.iter().map(Node::new).collect(), _dir: Dir(dir) };
        std::thread::scope(|scope| {
            let handles: Vec<_> = specs
                .iter()
                .map(|s| scope.spawn(|| format_node(rt, s, &quorum, Self::NODES, &cluster_id, Some(&initial))))
                .collect();
            handles.into_iter().try_for_each(|h| h.join().expect("format thread panicked"))
        })?;
        for node in &mut cluster.nodes {
            node.spawn("128m")?;
        }
        for i in 0..Self::NODES {
            cluster.wait_node_ready(i)?;
        }
        eprintln!("kafka: 3-node cluster {} ready in {:.1?}", cluster.bootstrap_servers(), started.elapsed());
        Ok(cluster)
    }

    fn wait_node_ready(&mut self, i: usize) -> Result<(), StartError> {
        let servers = self.nodes[i].bootstrap();
        self.nodes[i].wait_ready(&servers, Self::NODES)
    }

    /// All three brokers, comma-separated.
    pub fn bootstrap_servers(&self) -> String {
        self.nodes.iter().map(Node::bootstrap).collect::<Vec<_>>().join(",")
    }

    /// Node `i`'s client port (0-based index; its node.id is i + 1).
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].broker_port
    }

    /// Creates a topic with replication factor 3 and min.insync.replicas 2
    /// and waits until every partition has its full ISR.
    pub fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        create_topic(&self.bootstrap_servers(), name, partitions, 3, &[("min.insync.replicas", "2")])
    }

    /// SIGTERM to node `i`, SIGKILL if it has not exited in 20 s.
    pub fn stop_node(&mut self, i: usize) {
        self.nodes[i].stop();
    }

    /// SIGKILL to node `i`, as a crash would.
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again on its ports and data and waits until it
    /// serves and all three brokers are registered.
    pub fn restart_node(&mut self, i: usize) -> Result<(), StartError> {
        self.nodes[i].stop();
        self.nodes[i].spawn("128m")?;
        self.wait_node_ready(i)
    }

    /// Waits until every partition of `topic` has all three replicas in sync.
    pub fn wait_full_isr(&self, topic: &str, timeout: Duration) -> anyhow::Result<()> {
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", self.bootstrap_servers()).create()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(2)) {
                if md.topics().iter().any(|t| {
                    t.name() == topic && !t.partitions().is_empty() && t.partitions().iter().all(|p| p.isr().len() == Self::NODES)
                }) {
                    return Ok(());
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "ISR of {topic} not full within {timeout:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The log tail of node `i`.
    pub fn log_tail(&self, i: usize) -> String {
        self.nodes[i].server.as_ref().map(|s| s.log_tail()).unwrap_or_default()
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        // Stopping all nodes of a combined cluster together can hang the
        // last one's controlled shutdown (it loses the quorum): SIGTERM all,
        // give them 10 s together, then SIGKILL the rest. An archive writer
        // gets its own longer grace.
        for n in &self.nodes {
            n.terminate();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for n in &mut self.nodes {
            let d = if n.writer.is_some() { Instant::now() + STOP_GRACE_ARCHIVING } else { deadline };
            n.finish_stop(d);
        }
    }
}
