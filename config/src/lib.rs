//! millrace-config: the pipeline configuration, one set of types for the
//! worker's YAML file and the `StreamPipeline` spec (so the file format, the
//! CRD schema and the docs cannot drift apart), and its validation.
//!
//! A join rule's configuration ([`JoinRuleConfig`], [`TimePolicy`]) is
//! defined by the join crate, which compiles it; it is re-exported here with
//! the rest of the pipeline.
//!
//! Secrets never appear here: credentials are read by the worker from the
//! environment (or files) whose names are documented on each type, and the
//! operator fills those from Kubernetes Secrets.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use millrace_join::rule::{JoinRuleConfig, TimePolicy, DURATION_PATTERN};

pub mod kafka_security;
pub mod tls;
pub use kafka_security::{KafkaSecurity, SaslMechanism, SecurityProtocol};
pub use tls::TlsFiles;

/// What the CRD schema lets through as an MQTT broker URL (the scheme; the
/// host and port are checked by `PipelineConfig::validate`).
pub const MQTT_URL_PATTERN: &str = r"^(mqtts?|tcp|ssl)://[^\s]+$";
/// The schemes of an MQTT broker URL, plain first, then over TLS.
pub const MQTT_SCHEMES: [&str; 4] = ["mqtt", "tcp", "mqtts", "ssl"];
/// What the CRD schema lets through as an InfluxDB URL.
pub const HTTP_URL_PATTERN: &str = r"^https?://[^\s]+$";

/// The scope of a worker run from a file: what the names a configuration
/// leaves out (topics, consumer group, MQTT client ids and share group) are
/// made from. The operator scopes each pipeline by its namespace and name
/// instead ([`PipelineConfig::fill_names`]), so that two pipelines never
/// share a topic, a group or a session unless their specs name it.
pub const STANDALONE_SCOPE: &str = "millrace";
const STANDALONE_RAW_TOPIC: &str = "millrace.raw";
const STANDALONE_JOINED_TOPIC: &str = "millrace.joined";
const STANDALONE_DEAD_LETTER_TOPIC: &str = "millrace.dead-letter";

/// A whole pipeline: where machine data comes from, the Kafka topics that
/// carry it, the joins to derive, and where results go.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineConfig {
    /// The MQTT broker and subscription that machine messages arrive on.
    #[serde(default)]
    pub mqtt: MqttSource,
    /// How a wide machine message is read: which fields hold the machine
    /// name, the timestamp and the message id, and which quantities to keep.
    #[serde(default)]
    pub payload: PayloadFormat,
    /// Kafka connection and topics. Without it the worker runs every stage in
    /// one process, linked in memory (embedded mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaConfig>,
    /// Join rules: each pairs two quantities of a machine in time and derives
    /// a new one.
    #[serde(default)]
    pub joins: Vec<JoinRuleConfig>,
    /// The InfluxDB 1.x database that raw and joined records are written to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub influxdb: Option<InfluxDbTarget>,
    /// Where records that cannot be processed go, with their reason.
    #[serde(default)]
    pub dead_letter: DeadLetterConfig,
}

/// The MQTT source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MqttSource {
    /// Broker URL, `mqtt://host:port` (`tcp://` is the same; port 1883
    /// when left out), or over TLS `mqtts://host:port` (`ssl://` is the
    /// same; port 8883 when left out).
    #[serde(default = "default_mqtt_url")]
    #[schemars(regex(pattern = MQTT_URL_PATTERN))]
    pub url: String,
    /// Topic filters to subscribe to.
    #[serde(default = "default_mqtt_topics")]
    pub topics: Vec<String>,
    /// MQTT quality of service for the subscription: 0, 1 or 2.
    #[serde(default = "default_qos")]
    #[schemars(range(min = 0, max = 2))]
    pub qos: u8,
    /// Client id prefix; each worker appends its own suffix. Default: the
    /// scope, `millrace` for a worker run from a file and
    /// `millrace.<namespace>.<name>` for a `StreamPipeline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Shared-subscription group (`$share/GROUP/...`) so that several ingest
    /// workers split the messages between them. Empty: plain subscription.
    /// Default: the scope, as for `clientId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_group: Option<String>,
    /// Largest message accepted, in bytes; larger ones go to the dead letters.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Username and password come from `MILLRACE_MQTT_USERNAME` and
    /// `MILLRACE_MQTT_PASSWORD` (or `..._FILE`); this names the Kubernetes
    /// Secret the operator maps into them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SecretCredentials>,
    /// With `mqtts://`: the CA to trust (the system's CAs without it) and a
    /// client certificate for brokers that require one. A Secret named here
    /// is mounted into the workers at `/etc/millrace/mqtt-tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
}

/// How a wide machine message is read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PayloadFormat {
    /// Field that names the machine.
    #[serde(default = "default_thing_field")]
    pub thing_field: String,
    /// Field that holds the timestamp: epoch seconds, milliseconds,
    /// microseconds or nanoseconds (told apart by magnitude) or RFC 3339.
    #[serde(default = "default_timestamp_field")]
    pub timestamp_field: String,
    /// Field that holds the message id (kept out of the quantities).
    #[serde(default = "default_id_field")]
    pub id_field: String,
    /// Regular expression a field name must match to be forwarded as a
    /// quantity. Absent: every numeric field is a quantity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantities: Option<String>,
}

/// Kafka connection and topics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// Consumer group prefix; each stage appends its name, and the join
    /// stage's transactional ids start with it. Default: the scope,
    /// `millrace` for a worker run from a file and
    /// `millrace.<namespace>.<name>` for a `StreamPipeline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// The topics of the pipeline.
    #[serde(default)]
    pub topics: Topics,
    /// How often the join stage commits its Kafka transaction.
    #[serde(default = "default_transaction_interval", with = "humantime_serde")]
    #[schemars(with = "String", regex(pattern = DURATION_PATTERN))]
    pub transaction_interval: Duration,
    /// TLS and SASL: how the clients reach a secured Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<KafkaSecurity>,
    /// Extra librdkafka properties for every client (tuning, or security
    /// settings `security` does not cover); never a password or a key,
    /// which are refused here (this ends up in a ConfigMap).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// After a restart or rebalance, the join stage re-reads at most this
    /// many raw records per partition; records it still holds from before
    /// are kept in the `joinState` topic instead, so that a quiet machine
    /// never holds the committed offset back and nothing depends on the raw
    /// topic's retention.
    #[serde(default = "default_replay_limit")]
    #[schemars(range(min = 1))]
    pub replay_limit: u64,
}

/// The topics of a pipeline. Names left out are made from the scope:
/// `<scope>.raw`, `<scope>.joined` and `<scope>.dead-letter` (`millrace.raw`
/// and so on for a worker run from a file).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Topics {
    /// Narrow records from ingest, keyed by machine.
    #[serde(default)]
    pub raw: TopicSpec,
    /// Joined records from the join stage, keyed by machine.
    #[serde(default)]
    pub joined: TopicSpec,
    /// Records that could not be processed, with the reason.
    #[serde(default)]
    pub dead_letter: TopicSpec,
    /// The join stage's held records older than its replay limit
    /// (compacted; as many partitions as `raw`). It belongs to the join's
    /// consumer group and raw topic: default `<raw>.<groupId>.join-state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_state: Option<StateTopicSpec>,
}

/// The join stage's state topic: its partitions follow the raw topic's, and
/// it is always compacted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateTopicSpec {
    /// Topic name.
    pub name: String,
    /// Replication factor; the raw topic's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub replication_factor: Option<i32>,
    /// Topic configs besides `cleanup.policy=compact`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// One Kafka topic as the configuration gives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TopicSpec {
    /// Topic name; made from the scope when unset (see [`Topics`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Number of partitions. It can be increased later, never decreased.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1))]
    pub partitions: i32,
    /// Replication factor; the broker's `default.replication.factor` when
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub replication_factor: Option<i32>,
    /// Topic configs, e.g. `retention.ms`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// A topic as it is created: every name resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaTopic {
    pub name: String,
    pub partitions: i32,
    /// `None`: the broker's default.
    pub replication_factor: Option<i32>,
    pub config: BTreeMap<String, String>,
}

impl KafkaTopic {
    /// The replication factor a CreateTopics request carries: -1 asks the
    /// broker for its `default.replication.factor`.
    pub fn replication_for_create(&self) -> i32 {
        self.replication_factor.unwrap_or(-1)
    }
}

/// The InfluxDB 1.x target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InfluxDbTarget {
    /// Base URL, e.g. `http://influxdb:8086`.
    #[schemars(regex(pattern = HTTP_URL_PATTERN))]
    pub url: String,
    /// Database; created when missing.
    #[serde(default = "default_database")]
    pub database: String,
    /// Measurement that points are written to.
    #[serde(default = "default_measurement")]
    pub measurement: String,
    /// Extra tags put on every point.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// What to export: `raw`, `joined` or both.
    #[serde(default = "default_export_streams")]
    pub export: Vec<ExportStream>,
    /// Points per write request.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1))]
    pub batch_size: usize,
    /// Longest a point waits before its batch is written.
    #[serde(default = "default_flush_interval", with = "humantime_serde")]
    #[schemars(with = "String", regex(pattern = DURATION_PATTERN))]
    pub flush_interval: Duration,
    /// Username and password come from `MILLRACE_INFLUXDB_USERNAME` and
    /// `MILLRACE_INFLUXDB_PASSWORD` (or `..._FILE`); this names the
    /// Kubernetes Secret the operator maps into them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SecretCredentials>,
    /// With `https://`: the CA to trust (the system's CAs without it) and a
    /// client certificate for servers that require one. A Secret named here
    /// is mounted into the workers at `/etc/millrace/influxdb-tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
}

/// A stream the export stage writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportStream {
    /// Narrow records as ingested.
    Raw,
    /// Joined records.
    Joined,
}

/// A reference to a Kubernetes Secret holding a username and a password.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretCredentials {
    /// Name of the Secret, in the pipeline's namespace.
    pub secret_name: String,
    /// Key of the username in the Secret.
    #[serde(default = "default_username_key")]
    pub username_key: String,
    /// Key of the password in the Secret.
    #[serde(default = "default_password_key")]
    pub password_key: String,
}

/// Where dead letters go.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// In embedded mode, the JSONL file dead letters are appended to.
    /// Default: `dead-letters.jsonl` in the working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// A configuration that cannot be used, with the path of the bad field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(transparent)]
    Rule(#[from] millrace_join::rule::RuleError),
}

impl PipelineConfig {
    /// Reads and validates a YAML (or JSON) configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let config: PipelineConfig = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<config>".into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot: value ranges, unique names, and that
    /// every join rule compiles.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mqtt.qos > 2 {
            return Err(invalid("mqtt.qos", "must be 0, 1 or 2"));
        }
        if let Some(quantities) = &self.payload.quantities {
            regex::Regex::new(quantities)
                .map_err(|e| invalid("payload.quantities", &e.to_string()))?;
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, rule) in self.joins.iter().enumerate() {
            if !names.insert(rule.name.as_str()) {
                return Err(invalid(&format!("joins[{i}].name"), &format!("duplicate rule name {:?}", rule.name)));
            }
            millrace_join::rule::JoinRule::compile(i, rule)?;
        }
        check_url(&self.mqtt.url, &MQTT_SCHEMES).map_err(|m| invalid("mqtt.url", &m))?;
        if let Some(tls) = &self.mqtt.tls {
            if !self.mqtt.uses_tls() {
                return Err(invalid("mqtt.tls", &format!("TLS settings need an mqtts:// URL, not {:?}", self.mqtt.url)));
            }
            tls.check().map_err(|m| invalid("mqtt.tls", &m))?;
        }
        if let Some(influxdb) = &self.influxdb {
            check_url(&influxdb.url, &["http", "https"]).map_err(|m| invalid("influxdb.url", &m))?;
            if let Some(tls) = &influxdb.tls {
                if !influxdb.url.starts_with("https://") {
                    return Err(invalid("influxdb.tls", &format!("TLS settings need an https:// URL, not {:?}", influxdb.url)));
                }
                tls.check().map_err(|m| invalid("influxdb.tls", &m))?;
            }
        }
        if let Some(kafka) = &self.kafka {
            if let Some((key, instead)) = kafka_security::secret_property(kafka.properties.keys()) {
                return Err(invalid(
                    &format!("kafka.properties.{key}"),
                    &format!("a secret does not belong in the configuration (on Kubernetes it sits in a ConfigMap); give {instead}"),
                ));
            }
            if let Some(security) = &kafka.security {
                security.check().map_err(|(field, message)| invalid(&format!("kafka.security.{field}"), &message))?;
            }
            let topics = kafka.wanted_topics();
            for (i, (field, topic)) in topics.iter().enumerate() {
                check_topic_name(&topic.name).map_err(|m| invalid(&format!("kafka.topics.{field}.name"), &m))?;
                if topic.partitions < 1 {
                    return Err(invalid(&format!("kafka.topics.{field}.partitions"), "must be at least 1"));
                }
                if let Some((other, _)) = topics[..i].iter().find(|(_, t)| t.name == topic.name) {
                    return Err(invalid(
                        &format!("kafka.topics.{field}.name"),
                        &format!("{:?} is also the {other} topic; the raw, joined, dead-letter and join state topics must be distinct", topic.name),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl PipelineConfig {
    /// Gives every name the configuration leaves out the one `scope` makes:
    /// MQTT client id prefix and share group, consumer group `<scope>`, and
    /// topics `<scope>.raw`, `<scope>.joined` and `<scope>.dead-letter` (the
    /// join state topic follows from the raw topic and the group). Names
    /// given are kept. With [`STANDALONE_SCOPE`] nothing changes in effect.
    pub fn fill_names(&mut self, scope: &str) {
        self.mqtt.client_id.get_or_insert_with(|| scope.to_string());
        self.mqtt.share_group.get_or_insert_with(|| scope.to_string());
        if let Some(kafka) = &mut self.kafka {
            kafka.group_id.get_or_insert_with(|| scope.to_string());
            let topics = &mut kafka.topics;
            for (topic, suffix) in [(&mut topics.raw, "raw"), (&mut topics.joined, "joined"), (&mut topics.dead_letter, "dead-letter")] {
                topic.name.get_or_insert_with(|| format!("{scope}.{suffix}"));
            }
        }
    }
}

/// Kafka's rules for a topic name: 1 to 249 characters of `[a-zA-Z0-9._-]`,
/// neither `.` nor `..`.
pub fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid Kafka topic name"));
    }
    if name.len() > 249 {
        return Err(format!("{} characters; Kafka allows at most 249", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("{name:?} holds {c:?}; Kafka topic names are letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

/// A URL `scheme://host[:port][/path]` with one of `schemes`, a host and, when
/// given, a port in 1..=65535.
pub fn check_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    let want = schemes.iter().map(|s| format!("{s}://")).collect::<Vec<_>>().join(" or ");
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("{url:?} is not a URL; expected {want}host:port"));
    };
    if !schemes.contains(&scheme) {
        return Err(format!("{url:?}: scheme {scheme:?}; expected {want}host:port"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(format!("{url:?}: credentials do not belong in the URL; name a Secret in credentials"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => return Err(format!("{url:?}: unclosed '[' in the host")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host; expected {want}host:port"));
    }
    if let Some(c) = host.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))) {
        return Err(format!("{url:?}: the host {host:?} holds {c:?}"));
    }
    if let Some(port) = port {
        match port.parse::<u32>() {
            Ok(1..=65535) => {}
            _ => return Err(format!("{url:?}: port {port:?} is not a number in 1..65535")),
        }
    }
    Ok(())
}

fn invalid(field: &str, message: &str) -> ConfigError {
    ConfigError::Invalid { field: field.into(), message: message.into() }
}

impl Default for MqttSource {
    fn default() -> Self {
        Self {
            url: default_mqtt_url(),
            topics: default_mqtt_topics(),
            qos: default_qos(),
            client_id: None,
            share_group: None,
            max_message_bytes: default_max_message_bytes(),
            credentials: None,
            tls: None,
        }
    }
}

impl Default for PayloadFormat {
    fn default() -> Self {
        Self {
            thing_field: default_thing_field(),
            timestamp_field: default_timestamp_field(),
            id_field: default_id_field(),
            quantities: None,
        }
    }
}

impl Default for TopicSpec {
    fn default() -> Self {
        Self { name: None, partitions: default_partitions(), replication_factor: None, config: BTreeMap::new() }
    }
}

impl MqttSource {
    /// The client id prefix (the scope's when left out).
    pub fn client_id(&self) -> &str {
        self.client_id.as_deref().unwrap_or(STANDALONE_SCOPE)
    }

    /// The shared-subscription group, empty for none (the scope when left out).
    pub fn share_group(&self) -> &str {
        self.share_group.as_deref().unwrap_or(STANDALONE_SCOPE)
    }

    /// Whether the URL asks for TLS (`mqtts://` or `ssl://`).
    pub fn uses_tls(&self) -> bool {
        mqtt_url_uses_tls(&self.url)
    }
}

/// Whether an MQTT broker URL asks for TLS (`mqtts://` or `ssl://`).
pub fn mqtt_url_uses_tls(url: &str) -> bool {
    url.starts_with("mqtts://") || url.starts_with("ssl://")
}

impl Topics {
    /// The raw topic's name.
    pub fn raw_name(&self) -> &str {
        self.raw.name.as_deref().unwrap_or(STANDALONE_RAW_TOPIC)
    }

    /// The joined topic's name.
    pub fn joined_name(&self) -> &str {
        self.joined.name.as_deref().unwrap_or(STANDALONE_JOINED_TOPIC)
    }

    /// The dead-letter topic's name.
    pub fn dead_letter_name(&self) -> &str {
        self.dead_letter.name.as_deref().unwrap_or(STANDALONE_DEAD_LETTER_TOPIC)
    }

    /// `<raw>.<groupId>.join-state`: the state of one consumer group's join of
    /// one raw topic, so that pipelines sharing either never share it. Characters
    /// a topic name cannot hold become `_`; a name past Kafka's 249 characters
    /// is cut and ends in a hash of the whole.
    fn default_join_state_name(raw: &str, group_id: &str) -> String {
        use sha2::Digest;
        let full = format!("{raw}.{group_id}.join-state");
        let name: String = full.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect();
        if name.len() <= 249 {
            return name;
        }
        let hash = hex::encode(&sha2::Sha256::digest(full.as_bytes())[..8]);
        format!("{}-{hash}.join-state", &name[..249 - 28])
    }

    /// The join state topic as created: the raw topic's partitions (state
    /// partition p holds what raw partition p's join holds) and compacted.
    /// `group_id` names it by default: it holds that group's state.
    pub fn join_state_topic(&self, group_id: &str) -> KafkaTopic {
        let (name, replication_factor, mut config) = match &self.join_state {
            Some(s) => (s.name.clone(), s.replication_factor.or(self.raw.replication_factor), s.config.clone()),
            None => (Self::default_join_state_name(self.raw_name(), group_id), self.raw.replication_factor, BTreeMap::new()),
        };
        config.insert("cleanup.policy".into(), "compact".into());
        KafkaTopic { name, partitions: self.raw.partitions, replication_factor, config }
    }
}

impl KafkaConfig {
    /// The consumer group prefix (the scope when left out).
    pub fn group_id(&self) -> &str {
        self.group_id.as_deref().unwrap_or(STANDALONE_SCOPE)
    }

    /// The join stage's state topic (see [`Topics::join_state_topic`]).
    pub fn join_state_topic(&self) -> KafkaTopic {
        self.topics.join_state_topic(self.group_id())
    }

    /// Every topic of the pipeline, as created, with the field that names
    /// it: raw, joined, dead letters and the join stage's state.
    pub fn wanted_topics(&self) -> [(&'static str, KafkaTopic); 4] {
        let as_created = |spec: &TopicSpec, name: &str| KafkaTopic {
            name: name.to_string(),
            partitions: spec.partitions,
            replication_factor: spec.replication_factor,
            config: spec.config.clone(),
        };
        let t = &self.topics;
        [
            ("raw", as_created(&t.raw, t.raw_name())),
            ("joined", as_created(&t.joined, t.joined_name())),
            ("deadLetter", as_created(&t.dead_letter, t.dead_letter_name())),
            ("joinState", self.join_state_topic()),
        ]
    }

    /// The librdkafka properties every client starts from: the bootstrap
    /// servers, the security settings, then the pipeline's extra properties
    /// (which may override anything before them). Credentials are not among
    /// them: the client adds those from where they are kept.
    pub fn client_properties(&self) -> impl Iterator<Item = (String, String)> + '_ {
        std::iter::once(("bootstrap.servers".to_string(), self.bootstrap_servers.clone()))
            .chain(self.security.iter().flat_map(|s| s.properties()))
            .chain(self.properties.iter().map(|(k, v)| (k.clone(), v.clone())))
    }
}

impl TopicSpec {
    /// A topic with default partitions, replication and no configs.
    pub fn named(name: &str) -> Self {
        Self { name: Some(name.into()), ..Default::default() }
    }
}

fn default_mqtt_url() -> String { "mqtt://127.0.0.1:1883".into() }
fn default_mqtt_topics() -> Vec<String> { vec!["machines/#".into()] }
fn default_qos() -> u8 { 1 }
fn default_max_message_bytes() -> usize { 256 * 1024 }
fn default_thing_field() -> String { "Thing".into() }
fn default_timestamp_field() -> String { "Timestamp".into() }
fn default_id_field() -> String { "id".into() }
fn default_transaction_interval() -> Duration { Duration::from_millis(100) }
fn default_replay_limit() -> u64 { 100_000 }
fn default_partitions() -> i32 { 6 }
fn default_database() -> String { "millrace".into() }
fn default_measurement() -> String { "machine".into() }
fn default_export_streams() -> Vec<ExportStream> { vec![ExportStream::Raw, ExportStream::Joined] }
fn default_batch_size() -> usize { 5000 }
fn default_flush_interval() -> Duration { Duration::from_millis(200) }
fn default_username_key() -> String { "username".into() }
fn default_password_key() -> String { "password".into() }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_takes_defaults() {
        let c = PipelineConfig::from_yaml("{}").unwrap();
        assert_eq!(c.payload.thing_field, "Thing");
        assert_eq!(c.mqtt.qos, 1);
        assert!(c.kafka.is_none());
    }

    #[test]
    fn unknown_field_is_named() {
        let e = PipelineConfig::from_yaml("mqtt:\n  urll: x\n").unwrap_err().to_string();
        assert!(e.contains("urll"), "{e}");
    }

    #[test]
    fn durations_read_as_humantime() {
        let c = PipelineConfig::from_yaml(
            "joins:\n- name: p\n  left: a\n  right: b\n  maxDelta: 500ms\n",
        )
        .unwrap();
        assert_eq!(c.joins[0].max_delta, Some(Duration::from_millis(500)));
    }

    #[test]
    fn bad_join_expressions_are_found_when_loading() {
        let e = PipelineConfig::from_yaml("joins:\n- {name: p, left: a, right: b, expression: 'left +* 2'}\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("joins[0] (p).expression: unexpected '*' at column 7"), "{e}");
    }

    #[test]
    fn urls_need_their_scheme_a_host_and_a_port_in_range() {
        let ok = |u: &str| check_url(u, &["mqtt", "tcp"]);
        assert!(ok("mqtt://broker:1883").is_ok());
        assert!(ok("tcp://broker").is_ok());
        assert!(ok("mqtt://[::1]:1883/").is_ok());
        for (bad, says) in [
            ("broker:1883", "is not a URL"),
            ("http://broker:1883", "scheme \"http\""),
            ("mqtt://:1883", "has no host"),
            ("mqtt://broker:18830000", "is not a number in 1..65535"),
            ("mqtt://broker:0", "is not a number"),
            ("mqtt://broker:port", "is not a number"),
            ("mqtt://bro ker:1883", "holds ' '"),
            ("mqtt://user:secret@broker:1883", "credentials do not belong"),
        ] {
            let e = ok(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = PipelineConfig::from_yaml("mqtt: {url: 'mqtt://broker:99999'}\n").unwrap_err().to_string();
        assert!(e.starts_with("mqtt.url: "), "{e}");
        let e = PipelineConfig::from_yaml("influxdb: {url: 'ftp://influx'}\n").unwrap_err().to_string();
        assert!(e.starts_with("influxdb.url: "), "{e}");
    }

    #[test]
    fn tls_settings_need_a_tls_url_and_a_whole_client_certificate() {
        assert!(PipelineConfig::from_yaml("mqtt: {url: 'mqtts://broker:8883', tls: {caFile: /ca.crt}}\n").unwrap().mqtt.uses_tls());
        assert!(PipelineConfig::from_yaml("mqtt: {url: 'ssl://broker'}\n").unwrap().mqtt.uses_tls());
        for (yaml, field, says) in [
            ("mqtt: {url: 'mqtt://broker', tls: {caFile: /ca.crt}}", "mqtt.tls", "need an mqtts:// URL"),
            ("mqtt: {url: 'mqtts://broker', tls: {keyFile: /k.pem}}", "mqtt.tls", "both certificateFile and keyFile"),
            ("influxdb: {url: 'http://influx:8086', tls: {caFile: /ca.crt}}", "influxdb.tls", "need an https:// URL"),
            ("influxdb: {url: 'https://influx:8086', tls: {certificateFile: /c.pem}}", "influxdb.tls", "both certificateFile"),
        ] {
            let e = PipelineConfig::from_yaml(&format!("{yaml}\n")).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{field}: ")) && e.contains(says), "{yaml}: {e}");
        }
        PipelineConfig::from_yaml("influxdb: {url: 'https://influx:8086', tls: {caFile: /ca.crt}}\n").unwrap();
    }

    #[test]
    fn topic_names_follow_kafkas_rules_and_are_distinct() {
        assert!(check_topic_name("plant-1.line_2.raw").is_ok());
        assert!(check_topic_name(&"a".repeat(249)).is_ok());
        for bad in ["", ".", "..", "a b", "raw/topic", "ümlaut"] {
            assert!(check_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_topic_name(&"a".repeat(250)).unwrap_err().contains("at most 249"));
        let e = PipelineConfig::from_yaml("kafka: {bootstrapServers: k, topics: {raw: {name: 'a b'}}}\n").unwrap_err().to_string();
        assert!(e.starts_with("kafka.topics.raw.name: "), "{e}");
        let e = PipelineConfig::from_yaml("kafka: {bootstrapServers: k, topics: {raw: {name: t}, joined: {name: t}}}\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("kafka.topics.joined.name: \"t\" is also the raw topic"), "{e}");
        let e = PipelineConfig::from_yaml("kafka: {bootstrapServers: k, topics: {deadLetter: {name: millrace.joined}}}\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("kafka.topics.deadLetter.name: "), "{e}");
        let e = PipelineConfig::from_yaml("kafka: {bootstrapServers: k, topics: {joinState: {name: millrace.raw}}}\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("kafka.topics.joinState.name: \"millrace.raw\" is also the raw topic"), "{e}");
    }

    #[test]
    fn names_left_out_are_made_from_the_scope_and_names_given_are_kept() {
        let standalone = PipelineConfig::from_yaml("kafka: {bootstrapServers: k}\n").unwrap();
        let mut filled = standalone.clone();
        filled.fill_names(STANDALONE_SCOPE);
        let (k, f) = (standalone.kafka.as_ref().unwrap(), filled.kafka.as_ref().unwrap());
        assert_eq!(k.wanted_topics(), f.wanted_topics(), "a worker run from a file: as if filled with its scope");
        assert_eq!((k.group_id(), standalone.mqtt.client_id(), standalone.mqtt.share_group()), ("millrace", "millrace", "millrace"));
        assert_eq!(k.topics.raw_name(), "millrace.raw");

        let mut scoped = PipelineConfig::from_yaml("mqtt: {shareGroup: ''}\nkafka: {bootstrapServers: k, topics: {joined: {name: plant.joined}, raw: {partitions: 12}}}\n").unwrap();
        scoped.fill_names("millrace.plant.line-1");
        let k = scoped.kafka.as_ref().unwrap();
        let names: Vec<String> = k.wanted_topics().into_iter().map(|(_, t)| t.name).collect();
        assert_eq!(
            names,
            [
                "millrace.plant.line-1.raw",
                "plant.joined",
                "millrace.plant.line-1.dead-letter",
                "millrace.plant.line-1.raw.millrace.plant.line-1.join-state"
            ]
        );
        assert_eq!(k.wanted_topics()[0].1.partitions, 12, "the rest of a topic given without a name is kept");
        assert_eq!((k.group_id(), scoped.mqtt.client_id()), ("millrace.plant.line-1", "millrace.plant.line-1"));
        assert_eq!(scoped.mqtt.share_group(), "", "an empty share group (no shared subscription) is a name given");
        let yaml = serde_yaml::to_string(&scoped).unwrap();
        assert_eq!(PipelineConfig::from_yaml(&yaml).unwrap(), scoped, "the filled names are written out for the worker");
        assert_eq!(k.wanted_topics()[0].1.replication_factor, None, "the broker's default replication");
    }

    #[test]
    fn the_join_state_topic_follows_the_raw_topic_and_is_named_after_the_group() {
        let c = PipelineConfig::from_yaml("kafka: {bootstrapServers: k, groupId: line-1, topics: {raw: {name: plant.raw, partitions: 12, replicationFactor: 3}}}\n").unwrap();
        let state = c.kafka.unwrap().join_state_topic();
        assert_eq!((state.name.as_str(), state.partitions, state.replication_factor), ("plant.raw.line-1.join-state", 12, Some(3)));
        assert_eq!(state.config["cleanup.policy"], "compact");
        let c = PipelineConfig::from_yaml(
            "kafka: {bootstrapServers: k, topics: {raw: {name: r, partitions: 4}, joinState: {name: s, config: {cleanup.policy: delete, segment.ms: '60000'}}}}\n",
        )
        .unwrap();
        let state = c.kafka.unwrap().join_state_topic();
        assert_eq!((state.name.as_str(), state.partitions), ("s", 4));
        assert_eq!(state.config["cleanup.policy"], "compact", "always compacted");
        assert_eq!(state.config["segment.ms"], "60000");
        // A group id a topic name cannot hold, and one too long for Kafka.
        let odd = PipelineConfig::from_yaml("kafka: {bootstrapServers: k, groupId: 'plant a/line 1', topics: {raw: {name: r}}}\n").unwrap();
        assert_eq!(odd.kafka.unwrap().join_state_topic().name, "r.plant_a_line_1.join-state");
        let long = PipelineConfig::from_yaml(&format!("kafka: {{bootstrapServers: k, groupId: '{}', topics: {{raw: {{name: r}}}}}}\n", "g".repeat(300))).unwrap();
        let name = long.kafka.unwrap().join_state_topic().name;
        assert!(name.len() <= 249 && name.ends_with(".join-state"), "{name}");
        assert!(check_topic_name(&name).is_ok());
    }

    #[test]
    fn duplicate_rule_names_point_at_the_second() {
        let e = PipelineConfig::from_yaml(
            "joins:\n- {name: p, left: a, right: b}\n- {name: p, left: c, right: d}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("joins[1].name"), "{e}");
    }
}
