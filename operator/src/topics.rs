//! The pipeline's Kafka topics, kept in line through the admin API the way
//! Strimzi's topic operator treats them: create what is missing, adopt what
//! exists, increase partitions, report a decrease as not supported, keep
//! the configured topic configs set.

use std::time::Duration;

use millrace_config::{KafkaConfig, TopicSpec};
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

use crate::crd::TopicStatus;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Why the topics are not as the spec says.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error("Kafka at {servers} is unreachable: {detail}")]
    Unreachable { servers: String, detail: String },
    #[error("topic {topic} has {actual} partitions and the spec asks for {wanted}: Kafka cannot decrease partitions; raise the spec back or recreate the topic")]
    PartitionDecrease { topic: String, actual: i32, wanted: i32 },
    #[error("topic {topic}: {detail}")]
    Failed { topic: String, detail: String },
}

impl TopicsError {
    /// The CamelCase reason of the `TopicsReady` condition.
    pub fn reason(&self) -> &'static str {
        match self {
            TopicsError::Unreachable { .. } => "KafkaUnreachable",
            TopicsError::PartitionDecrease { .. } => "PartitionDecreaseNotSupported",
            TopicsError::Failed { .. } => "TopicOperationFailed",
        }
    }
}

/// How many topics a pipeline has.
pub const PER_PIPELINE: usize = 4;

/// The topics of a pipeline: raw, joined, dead letters and the join
/// stage's state (compacted, as many partitions as raw).
pub fn wanted(kafka: &KafkaConfig) -> [TopicSpec; PER_PIPELINE] {
    [kafka.topics.raw.clone(), kafka.topics.joined.clone(), kafka.topics.dead_letter.clone(), kafka.join_state_spec()]
}

/// Admin clients by cluster: each holds librdkafka threads and buffers, so
/// pipelines on one Kafka share one.
#[derive(Default)]
pub struct AdminClients {
    clients: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<AdminClient<DefaultClientContext>>>>,
}

impl AdminClients {
    fn get(&self, kafka: &KafkaConfig) -> Result<std::sync::Arc<AdminClient<DefaultClientContext>>, TopicsError> {
        // Keyed by every setting, not just the servers: properties may differ.
        let key = format!("{}|{:?}", kafka.bootstrap_servers, kafka.properties);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let admin: AdminClient<DefaultClientContext> = ClientConfig::from_iter(kafka.client_properties())
            .set("socket.timeout.ms", "5000")
            .create()
            .map_err(|e| TopicsError::Unreachable { servers: kafka.bootstrap_servers.clone(), detail: e.to_string() })?;
        let admin = std::sync::Arc::new(admin);
        clients.insert(key, admin.clone());
        Ok(admin)
    }
}

/// Brings the broker's topics in line with the spec and reports them.
pub async fn ensure(clients: &AdminClients, kafka: &KafkaConfig) -> Result<Vec<TopicStatus>, TopicsError> {
    let servers = kafka.bootstrap_servers.clone();
    let unreachable = |detail: String| TopicsError::Unreachable { servers: servers.clone(), detail };
    let admin = clients.get(kafka)?;
    let existing = partitions_in_broker(&admin, kafka).await.map_err(unreachable)?;
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT)).request_timeout(Some(TIMEOUT));
    let mut statuses = Vec::new();
    for spec in &wanted(kafka) {
        let failed = |detail: String| TopicsError::Failed { topic: spec.name.clone(), detail };
        match existing.iter().find(|(name, _)| *name == spec.name).map(|(_, p)| *p) {
            None => {
                let config: Vec<(&str, &str)> = spec.config.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let mut topic = NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(spec.replication_factor));
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
            }
            Some(actual) if actual < spec.partitions => {
                let increase = NewPartitions::new(&spec.name, spec.partitions as usize);
                for r in admin.create_partitions([&increase], &options).await.map_err(|e| failed(e.to_string()))? {
                    r.map_err(|(_, code)| failed(format!("cannot add partitions: {code}")))?;
                }
                tracing::info!(topic = %spec.name, from = actual, to = spec.partitions, "increased partitions");
            }
            Some(actual) if actual > spec.partitions => {
                return Err(TopicsError::PartitionDecrease { topic: spec.name.clone(), actual, wanted: spec.partitions });
            }
            Some(_) => {
                if !spec.config.is_empty() && !configs_in_line(&admin, spec, &options).await {
                    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(&spec.name));
                    for (k, v) in &spec.config {
                        alter = alter.set(k, v);
                    }
                    for r in admin.alter_configs([&alter], &options).await.map_err(|e| failed(e.to_string()))? {
                        r.map_err(|(_, code)| failed(format!("cannot set configs: {code}")))?;
                    }
                }
            }
        }
        statuses.push(TopicStatus { name: spec.name.clone(), partitions: spec.partitions });
    }
    Ok(statuses)
}

/// Whether the broker already holds the spec's configs for a topic: only
/// then is nothing written. A broker that cannot say is written to.
async fn configs_in_line(admin: &AdminClient<DefaultClientContext>, spec: &TopicSpec, options: &AdminOptions) -> bool {
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

/// Topic names and partition counts, as the broker reports them.
async fn partitions_in_broker(admin: &AdminClient<DefaultClientContext>, _kafka: &KafkaConfig) -> Result<Vec<(String, i32)>, String> {
    // Metadata calls block: keep them off the async executor.
    let metadata = tokio::task::block_in_place(|| admin.inner().fetch_metadata(None, TIMEOUT)).map_err(|e| e.to_string())?;
    Ok(metadata.topics().iter().map(|t| (t.name().to_string(), t.partitions().len() as i32)).collect())
}

/// Deletes the pipeline's topics (`deletionPolicy: Delete`).
pub async fn delete(clients: &AdminClients, kafka: &KafkaConfig) -> Result<(), TopicsError> {
    let admin = clients.get(kafka)?;
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
