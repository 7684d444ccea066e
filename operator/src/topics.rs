//! The pipeline's Kafka topics, kept in line through the admin API the way
//! Strimzi's topic operator treats them: create what is missing, adopt what
//! exists, increase partitions, report a decrease as not supported, keep
//! the configured topic configs set.

use std::time::Duration;

use millrace_config::{KafkaConfig, KafkaTopic};
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

use crate::crd::TopicStatus;

/// The longest a Kafka admin call waits: with Kafka unreachable, a
/// reconcile takes this long before it reports `KafkaUnreachable`.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why the topics are not as the spec says.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error("Kafka at {servers} is unreachable: {detail}")]
    Unreachable { servers: String, detail: String },
    #[error("topic {topic} has {actual} partitions and the spec asks for {wanted}: Kafka cannot decrease partitions; raise the spec back or recreate the topic")]
    PartitionDecrease { topic: String, actual: i32, wanted: i32 },
    #[error("topic {topic}: {detail}")]
    Failed { topic: String, detail: String },
    #[error("no Kafka login for the operator: {0}")]
    NoLogin(String),
}

impl TopicsError {
    /// The CamelCase reason of the `TopicsReady` condition.
    pub fn reason(&self) -> &'static str {
        match self {
            TopicsError::Unreachable { .. } => "KafkaUnreachable",
            TopicsError::PartitionDecrease { .. } => "PartitionDecreaseNotSupported",
            TopicsError::Failed { .. } => "TopicOperationFailed",
            TopicsError::NoLogin(_) => "KafkaLoginUnavailable",
        }
    }
}

/// How many topics a pipeline has.
pub const PER_PIPELINE: usize = 4;

/// The topics of a pipeline: raw, joined, dead letters and the join
/// stage's state (compacted, as many partitions as raw).
pub fn wanted(kafka: &KafkaConfig) -> [KafkaTopic; PER_PIPELINE] {
    kafka.wanted_topics().map(|(_, topic)| topic)
}

/// Admin clients by cluster: each holds librdkafka threads and buffers, so
/// pipelines on one Kafka share one.
#[derive(Default)]
pub struct AdminClients {
    clients: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<AdminClient<DefaultClientContext>>>>,
}

impl AdminClients {
    fn get(&self, kafka: &KafkaConfig, auth: &[(String, String)]) -> Result<std::sync::Arc<AdminClient<DefaultClientContext>>, TopicsError> {
        // Keyed by every setting, not just the servers: properties and
        // logins may differ (the login by its hash only).
        use sha2::Digest;
        let login = hex::encode(sha2::Sha256::digest(format!("{auth:?}").as_bytes()));
        let key = format!("{}|{:?}|{:?}|{login}", kafka.bootstrap_servers, kafka.security, kafka.properties);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let mut config = ClientConfig::from_iter(kafka.client_properties());
        for (k, v) in auth {
            // PEM text from the Secret stands for the workers' mounted file.
            if let Some(location) = k.strip_suffix(".pem").map(|p| format!("{p}.location")) {
                config.remove(&location);
            }
            config.set(k, v);
        }
        let admin: AdminClient<DefaultClientContext> = config
            .set("socket.timeout.ms", "5000")
            // A metadata request for a missing topic must not create it with
            // the broker's defaults before the operator creates it as wanted.
            .set("allow.auto.create.topics", "false")
            .create()
            .map_err(|e| TopicsError::Unreachable { servers: kafka.bootstrap_servers.clone(), detail: e.to_string() })?;
        let admin = std::sync::Arc::new(admin);
        clients.insert(key, admin.clone());
        Ok(admin)
    }
}

/// Brings the broker's topics in line with the spec and reports them.
/// `auth` is what [`crate::kafka_auth::read`] found.
pub async fn ensure(clients: &AdminClients, kafka: &KafkaConfig, auth: &[(String, String)]) -> Result<Vec<TopicStatus>, TopicsError> {
    let servers = kafka.bootstrap_servers.clone();
    let unreachable = |detail: String| TopicsError::Unreachable { servers: servers.clone(), detail };
    let admin = clients.get(kafka, auth)?;
    let topics = wanted(kafka);
    let existing = partitions_in_broker(&admin, &topics).await.map_err(unreachable)?;
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT)).request_timeout(Some(TIMEOUT));
    let mut changed = false;
    for spec in &topics {
        let failed = |detail: String| TopicsError::Failed { topic: spec.name.clone(), detail };
        match existing.iter().find(|(name, _)| *name == spec.name).map(|(_, p)| *p) {
            None => {
                let config: Vec<(&str, &str)> = spec.config.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let mut topic = NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(spec.replication_for_create()));
                for (k, v) in &config {
                    topic = topic.set(k, v);
                }
                for r in admin.create_topics([&topic], &options).await.map_err(|e| failed(e.to_string()))? {
                    match r {
                        Ok(_) => {}
                        // Created a moment ago (by this operator's previous
                        // reconcile, whose metadata answer did not show it
                        // yet, or by another pipeline sharing it): adopted.
                        Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((_, code)) => return Err(failed(format!("cannot create: {code}"))),
                    }
                }
                tracing::info!(topic = %spec.name, partitions = spec.partitions, "created topic");
                changed = true;
            }
            Some(actual) if actual < spec.partitions => {
                let increase = NewPartitions::new(&spec.name, spec.partitions as usize);
                for r in admin.create_partitions([&increase], &options).await.map_err(|e| failed(e.to_string()))? {
                    r.map_err(|(_, code)| failed(format!("cannot add partitions: {code}")))?;
                }
                tracing::info!(topic = %spec.name, from = actual, to = spec.partitions, "increased partitions");
                changed = true;
            }
            Some(actual) if actual > spec.partitions => {
                return Err(TopicsError::PartitionDecrease { topic: spec.name.clone(), actual, wanted: spec.partitions });
            }
            Some(_) => {
                if !spec.config.is_empty() && !configs_in_line(&admin, spec, &options).await {
                    // Only the configs the spec names; the others stay.
                    tokio::task::block_in_place(|| crate::topic_configs::set(&admin, &spec.name, &spec.config, TIMEOUT))
                        .map_err(|e| failed(format!("cannot set configs: {e}")))?;
                    tracing::info!(topic = %spec.name, "set topic configs");
                }
            }
        }
    }
    // The status says what the broker serves: after a change, only once its
    // metadata shows every topic with the partitions asked for.
    let mut served = existing;
    if changed {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            served = partitions_in_broker(&admin, &topics).await.map_err(unreachable)?;
            let lagging = topics.iter().find(|spec| !served.iter().any(|(name, p)| *name == spec.name && *p >= spec.partitions));
            match lagging {
                None => break,
                Some(spec) if std::time::Instant::now() >= deadline => {
                    return Err(TopicsError::Failed { topic: spec.name.clone(), detail: "made, but the broker does not serve all its partitions yet".into() });
                }
                Some(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
    }
    Ok(topics
        .into_iter()
        .map(|spec| {
            let partitions = served.iter().find(|(name, _)| *name == spec.name).map_or(spec.partitions, |(_, p)| *p);
            TopicStatus { name: spec.name, partitions }
        })
        .collect())
}

/// Whether the broker already holds the spec's configs for a topic: only
/// then is nothing written. A broker that cannot say is written to.
async fn configs_in_line(admin: &AdminClient<DefaultClientContext>, spec: &KafkaTopic, options: &AdminOptions) -> bool {
    let described = admin.describe_configs([&ResourceSpecifier::Topic(&spec.name)], options).await;
    let Ok(Some(Ok(resource))) = described.map(|mut r| r.pop()) else {
        return false;
    };
    let actual: Vec<(&str, Option<&str>)> = resource.entries.iter().map(|e| (e.name.as_str(), e.value.as_deref())).collect();
    holds_configs(&spec.config, &actual)
}

/// Every wanted config has the wanted value (pure).
fn holds_configs(wanted: &std::collections::BTreeMap<String, String>, actual: &[(&str, Option<&str>)]) -> bool {
    wanted.iter().all(|(k, v)| actual.iter().any(|(name, value)| name == k && *value == Some(v.as_str())))
}

/// The names and partition counts of those of `topics` the broker has:
/// metadata of the pipeline's topics only (a cluster may hold thousands).
async fn partitions_in_broker(admin: &AdminClient<DefaultClientContext>, topics: &[KafkaTopic]) -> Result<Vec<(String, i32)>, String> {
    let mut found = Vec::new();
    for topic in topics {
        // Metadata calls block: keep them off the async executor.
        let metadata = tokio::task::block_in_place(|| admin.inner().fetch_metadata(Some(&topic.name), TIMEOUT)).map_err(|e| e.to_string())?;
        found.extend(
            metadata
                .topics()
                .iter()
                .filter(|t| t.error().is_none() && t.name() == topic.name)
                .map(|t| (t.name().to_string(), t.partitions().len() as i32)),
        );
    }
    Ok(found)
}

/// Deletes the pipeline's topics (`deletionPolicy: Delete`).
pub async fn delete(clients: &AdminClients, kafka: &KafkaConfig, auth: &[(String, String)]) -> Result<(), TopicsError> {
    let admin = clients.get(kafka, auth)?;
    let wanted = wanted(kafka);
    let names: Vec<&str> = wanted.iter().map(|t| t.name.as_str()).collect();
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    for r in admin.delete_topics(&names, &options).await.map_err(|e| TopicsError::Unreachable {
        servers: kafka.bootstrap_servers.clone(),
        detail: e.to_string(),
    })? {
        if let Err((topic, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition {
                return Err(TopicsError::Failed { topic, detail: format!("cannot delete: {code}") });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::holds_configs;
    use std::collections::BTreeMap;

    #[test]
    fn configs_are_in_line_only_when_every_wanted_value_is_there() {
        let wanted = BTreeMap::from([("retention.ms".to_string(), "3600000".to_string())]);
        assert!(holds_configs(&wanted, &[("cleanup.policy", Some("delete")), ("retention.ms", Some("3600000"))]));
        assert!(!holds_configs(&wanted, &[("retention.ms", Some("604800000"))]));
        assert!(!holds_configs(&wanted, &[("retention.ms", None)]));
        assert!(!holds_configs(&wanted, &[]));
        assert!(holds_configs(&BTreeMap::new(), &[]));
    }
}
