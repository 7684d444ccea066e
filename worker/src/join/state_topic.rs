//! The join stage's state topic: the records a partition's join still holds
//! that arrived before its committed offset. With it, a restart replays at
//! most `replayLimit` raw records per partition however long a machine has
//! been quiet, and nothing depends on the raw topic still holding old
//! records (its retention may delete them).
//!
//! Partition p of the state topic belongs to partition p of the raw topic.
//! A message's key is the raw record's offset (decimal), its value the held
//! record with the rules holding it ([`HeldRecord::to_json`]); a record no
//! longer held gets a tombstone, and compaction keeps the topic to what is
//! held. Writes go into the join's transaction, so the state topic and the
//! committed offsets always agree.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

use millrace_config::KafkaConfig;
use millrace_join::joiner::HeldRecord;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Creates the state topic when it is missing (compacted, as many
/// partitions as the raw topic has), or adds partitions to follow the raw
/// topic's. The operator does the same with the pipeline's other topics;
/// this lets a worker run without it.
pub fn ensure(kafka: &KafkaConfig, reader: &BaseConsumer) -> anyhow::Result<()> {
    let spec = kafka.join_state_topic();
    let partitions_of = |topic: &str| -> anyhow::Result<Option<i32>> {
        let metadata = reader.fetch_metadata(Some(topic), TIMEOUT)?;
        Ok(metadata.topics().first().filter(|t| t.error().is_none()).map(|t| t.partitions().len() as i32))
    };
    let raw = partitions_of(kafka.topics.raw_name())?.unwrap_or(0).max(spec.partitions);
    let admin: AdminClient<DefaultClientContext> = crate::kafka::client_config(kafka).create()?;
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT)).request_timeout(Some(TIMEOUT));
    let results = match partitions_of(&spec.name)? {
        None => {
            let mut topic = NewTopic::new(&spec.name, raw, TopicReplication::Fixed(spec.replication_for_create()));
            for (k, v) in &spec.config {
                topic = topic.set(k, v);
            }
            tracing::info!(topic = %spec.name, partitions = raw, "creating the join state topic");
            futures::executor::block_on(admin.create_topics([&topic], &options))?
        }
        Some(actual) if actual < raw => {
            tracing::info!(topic = %spec.name, from = actual, to = raw, "adding partitions to the join state topic");
            futures::executor::block_on(admin.create_partitions([&NewPartitions::new(&spec.name, raw as usize)], &options))?
        }
        Some(_) => return Ok(()),
    };
    for r in results {
        match r {
            Ok(_) => {}
            // Another worker of the pipeline was first.
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create or grow the join state topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// A consumer that reads state partitions back (assigned by hand, no
/// group, committed transactions only).
pub fn reader(kafka: &KafkaConfig) -> anyhow::Result<BaseConsumer> {
    let mut config = crate::kafka::client_config(kafka);
    config
        .set("group.id", format!("{}-join-state-reader", kafka.group_id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed");
    Ok(config.create()?)
}

/// What partition `partition` of the state topic holds: the raw offsets and
/// held records, in offset order. Reads to the end (waiting, for at most 30
/// s, for a transaction a dead predecessor left open to be aborted).
pub fn read(reader: &BaseConsumer, topic: &str, partition: i32) -> anyhow::Result<BTreeMap<i64, Vec<u8>>> {
    let (low, high) = crate::kafka::retried(&format!("ask for the offsets of the join state {topic}/{partition}"), TIMEOUT, || {
        reader.fetch_watermarks(topic, partition, TIMEOUT)
    })?;
    let mut held = BTreeMap::new();
    if high <= low {
        return Ok(held);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
    reader.assign(&tpl)?;
    let started = Instant::now();
    let result = loop {
        if started.elapsed() > TIMEOUT {
            break Err(anyhow::anyhow!("cannot read the join state {topic}/{partition} to its end ({high}) within {TIMEOUT:?}"));
        }
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let key = m.key().and_then(|k| std::str::from_utf8(k).ok()).and_then(|k| k.parse::<i64>().ok());
                let Some(offset) = key else {
                    tracing::warn!(topic, partition, offset = m.offset(), "a state record without a raw offset as its key: skipped");
                    continue;
                };
                match m.payload() {
                    Some(value) => held.insert(offset, value.to_vec()),
                    None => held.remove(&offset),
                };
            }
            Some(Err(e)) => tracing::warn!(topic, partition, error = %e, "reading the join state: retrying"),
            None => {}
        }
        // Transaction markers take offsets but are never delivered: the
        // position, not the last message, says when the end is reached.
        let position = reader.position()?.find_partition(topic, partition).map(|e| e.offset());
        if let Some(Offset::Offset(p)) = position {
            if p >= high {
                break Ok(held);
            }
        }
    };
    reader.unassign()?;
    result
}

/// Brings partition `partition` of the state topic to `held` (the records
/// before the committed offset), inside the open transaction: writes what is
/// new, tombstones what is no longer held. Returns the records written.
pub fn sync(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    partition: i32,
    persisted: &mut BTreeSet<i64>,
    held: &BTreeMap<u64, HeldRecord>,
) -> anyhow::Result<usize> {
    let mut written = 0;
    let gone: Vec<i64> = persisted.iter().copied().filter(|o| !held.contains_key(&(*o as u64))).collect();
    for offset in gone {
        send(producer, topic, partition, &offset.to_string(), None)?;
        persisted.remove(&offset);
        written += 1;
    }
    for (offset, record) in held {
        let offset = *offset as i64;
        if persisted.insert(offset) {
            send(producer, topic, partition, &offset.to_string(), Some(&record.to_json()))?;
            written += 1;
        }
    }
    Ok(written)
}

fn send(producer: &ThreadedProducer<DefaultProducerContext>, topic: &str, partition: i32, key: &str, value: Option<&[u8]>) -> anyhow::Result<()> {
    let mut record: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic).partition(partition).key(key);
    if let Some(value) = value {
        record = record.payload(value);
    }
    crate::kafka::enqueue(producer, record)
}
