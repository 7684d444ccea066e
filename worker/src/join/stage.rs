//! The join stage on Kafka: raw topic in, joined topic out, exactly once.
//!
//! Records are consumed in a consumer group and joined per partition (all
//! quantities of a machine share a partition: the raw topic is keyed by
//! `thing`). Joined records and dead letters are produced inside a Kafka
//! transaction, committed every `transactionInterval`, together with the
//! consumer offsets, never once per record.
//!
//! What is committed per partition (the join spec's "Exactly once"):
//! - the *offset* is the oldest record the join still holds (or the next
//!   record when it holds none), but never more than `replayLimit` records
//!   behind the position: the held records older than the offset are kept
//!   in the join state topic ([`super::state_topic`]), written in the same
//!   transaction, so a quiet machine never holds the offset back;
//! - the offset's *metadata* (`{"pos":P,"late":[..]}`) is the position
//!   consumed so far, and the offsets of late records between the two.
//!
//! After a crash, a restart or a rebalance, a partition gets its held
//! records back from the state topic and replays from its committed offset;
//! pairs that became certain before `pos` were committed already, so they
//! are suppressed (the join is deterministic: exactly those were emitted),
//! and records that were late are skipped again, so that they do not enter
//! the rebuilt state. An open transaction is aborted when
//! partitions are revoked (its work is redone by the new owner from the
//! committed offsets); a fenced producer stops the process, which is then
//! restarted.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use millrace_config::{JoinRuleConfig, KafkaConfig};
use millrace_join::joiner::{Event, Input, Joiner, Rejected};
use millrace_join::record::parse_timestamp_str;

use super::state_topic;
use crate::dead_letter::{DeadLetter, Reason};
use crate::health::Health;

const TIMEOUT: Duration = Duration::from_secs(30);
/// Late offsets kept in the commit metadata; past this, a replay may accept
/// a record that was late (a warning says so).
const MAX_LATE_IN_METADATA: usize = 512;

/// The commit metadata of a partition.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitPosition {
    /// Next offset after the last one consumed.
    pub pos: i64,
    /// Offsets of late records between the committed offset and `pos`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub late: Vec<i64>,
}

struct PartitionState {
    joiner: Joiner,
    /// The offset this state was rebuilt from (what was committed): a
    /// commit never goes back before it.
    rebuilt_from: i64,
    /// Raw offsets whose held records the state topic has.
    persisted: BTreeSet<i64>,
    /// Pairs made certain before this offset were committed before.
    suppress_before: i64,
    /// Records at these offsets were late the first time.
    skip: BTreeSet<i64>,
    /// Late offsets seen since the committed offset (for the next metadata).
    late: Vec<i64>,
    next: i64,
}

impl PartitionState {
    /// What to commit for this partition: the offset of the oldest record
    /// the join still holds, and the position whose pairs are committed.
    ///
    /// While a rebuilt partition replays, `next` is behind the position
    /// committed before (`suppress_before`); committing `next` then would
    /// move the position back, and after another restart the pairs between
    /// the two would be emitted a second time. The position never goes back.
    fn commit_position(&mut self, partition: i32, replay_limit: u64) -> (i64, CommitPosition) {
        let oldest = self.joiner.min_retained_seq().map(|s| s as i64).unwrap_or(self.next).min(self.next);
        // Held records older than this go to the state topic instead.
        let limit = i64::try_from(replay_limit).unwrap_or(i64::MAX);
        let oldest = oldest.max(self.next.saturating_sub(limit)).max(self.rebuilt_from.min(self.next));
        self.late.retain(|o| *o >= oldest);
        if self.late.len() > MAX_LATE_IN_METADATA {
            tracing::warn!(partition, late = self.late.len(), "too many late records to remember; a replay may join some of them");
            let excess = self.late.len() - MAX_LATE_IN_METADATA;
            self.late.drain(..excess);
        }
        (oldest, CommitPosition { pos: self.next.max(self.suppress_before), late: self.late.clone() })
    }
}

/// Tells the stage loop about rebalances, and aborts the open transaction
/// before partitions go: the new owner redoes that work.
struct RebalanceContext {
    producer: Arc<ThreadedProducer<DefaultProducerContext>>,
    in_transaction: Arc<AtomicBool>,
    reset: Arc<AtomicBool>,
    health: Arc<Health>,
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            if self.in_transaction.swap(false, Ordering::SeqCst) {
                if let Err(e) = self.producer.abort_transaction(TIMEOUT) {
                    tracing::error!(error = %e, "cannot abort the transaction on revocation");
                }
            }
            tracing::info!(partitions = tpl.count(), "partitions revoked; state dropped");
            self.health.metrics.join_assigned_partitions.set(0);
            self.reset.store(true, Ordering::SeqCst);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::info!(partitions = tpl.count(), "partitions assigned");
            self.health.metrics.join_assigned_partitions.set(tpl.count() as i64);
            self.reset.store(true, Ordering::SeqCst);
        }
    }
}

/// A stable transactional id per instance, so that a restarted instance
/// fences and aborts its predecessor's open transaction at once.
pub fn transactional_id(group: &str) -> String {
    let instance = std::env::var("MILLRACE_INSTANCE")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "single".to_string());
    format!("{group}-join-{instance}")
}

/// The stage's transactional producer settings (also what the join
/// benchmark's ceiling uses, so that both measure the same client).
pub fn producer_config(kafka: &KafkaConfig, transactional_id: &str) -> rdkafka::ClientConfig {
    let mut config = crate::kafka::client_config(kafka);
    config
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", "10000")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    config
}

/// The stage's consumer settings: group `<groupId>-join`, offsets committed
/// only in its transactions, committed records only.
pub fn consumer_config(kafka: &KafkaConfig) -> rdkafka::ClientConfig {
    let mut config = crate::kafka::client_config(kafka);
    if std::env::var("MILLRACE_STATIC_MEMBERSHIP").is_ok_and(|v| v == "1" || v == "true") {
        // Static membership (an instance with a stable name, e.g. a
        // StatefulSet pod): a restarted instance takes its partitions back at
        // once, without a rebalance. It does not leave the group on a clean
        // stop, so scaling down waits for the session timeout.
        config.set("group.instance.id", transactional_id(kafka.group_id()));
    }
    config
        .set("group.id", format!("{}-join", kafka.group_id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("partition.assignment.strategy", "range")
        // A killed worker's partitions go to the others within seconds.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        // Also the rebalance timeout: how long a rebalance waits for a
        // member that died. The loop polls every 50 ms.
        .set("max.poll.interval.ms", "10000");
    config
}

/// Runs the join stage until `stop` is set. Blocking: call it from a
/// dedicated thread (transactional calls block).
pub fn run(kafka: &KafkaConfig, rules: &[JoinRuleConfig], health: Arc<Health>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    Joiner::new(rules)?; // rules are checked before anything connects
    // Every line this stage logs names the instance (its transactional id).
    let _span = tracing::info_span!("join", id = %transactional_id(kafka.group_id())).entered();
    let metrics = health.metrics.stage("join");
    let producer: Arc<ThreadedProducer<DefaultProducerContext>> =
        Arc::new(producer_config(kafka, &transactional_id(kafka.group_id())).create()?);
    producer.init_transactions(TIMEOUT)?;
    let in_transaction = Arc::new(AtomicBool::new(false));
    let reset = Arc::new(AtomicBool::new(false));
    let context = RebalanceContext { producer: producer.clone(), in_transaction: in_transaction.clone(), reset: reset.clone(), health: health.clone() };
    let consumer: BaseConsumer<RebalanceContext> = consumer_config(kafka)
        .create_with_context(context)?;
    consumer.subscribe(&[kafka.topics.raw_name()])?;
    let (joined_topic, dead_topic) = (kafka.topics.joined_name(), kafka.topics.dead_letter_name());
    let state_reader = state_topic::reader(kafka)?;
    state_topic::ensure(kafka, &state_reader)?;
    let state_topic_spec = kafka.join_state_topic();
    let state_topic_name = state_topic_spec.name.as_str();

    let mut partitions: HashMap<i32, PartitionState> = HashMap::new();
    let mut dirty = false;
    let mut last_commit = Instant::now();
    let mut last_lag = Instant::now();
    let mut out = Vec::with_capacity(512);
    health.set_ready(true);
    while !stop.load(Ordering::Relaxed) {
        let message = consumer.poll(Duration::from_millis(50));
        if reset.swap(false, Ordering::SeqCst) {
            partitions.clear();
            dirty = false;
        }
        if let Some(message) = message {
            let m = match message {
                Ok(m) => m,
                // A fatal consumer error (a static member fenced after its
                // coordinator moved, say) leaves a consumer that never
                // delivers again: stop, so that the stage is restarted
                // (its transaction, not committed, is aborted).
                Err(e @ rdkafka::error::KafkaError::MessageConsumptionFatal(_)) => {
                    metrics.error("kafka_consume");
                    anyhow::bail!("the Kafka consumer failed for good ({e}): the join stage stops to be restarted");
                }
                Err(e) => {
                    metrics.error("kafka_consume");
                    tracing::warn!(error = %e, "consume failed");
                    continue;
                }
            };
            if !in_transaction.load(Ordering::SeqCst) {
                producer.begin_transaction()?;
                in_transaction.store(true, Ordering::SeqCst);
            }
            let (partition, offset) = (m.partition(), m.offset());
            let state = match partitions.entry(partition) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let position = committed_position(&consumer, kafka.topics.raw_name(), partition)?;
                    let mut joiner = Joiner::new(rules)?;
                    let held = state_topic::read(&state_reader, state_topic_name, partition)?;
                    if position == CommitPosition::default() && !held.is_empty() {
                        // Without a committed position (a new or reset group)
                        // the state is someone else's: dropped, and
                        // tombstoned at the first commit.
                        tracing::warn!(partition, records = held.len(), topic = state_topic_name, "the join state topic holds records of a partition without a committed position: ignored and deleted");
                    } else {
                        for (held_offset, value) in &held {
                            restore(&mut joiner, *held_offset, value);
                        }
                    }
                    tracing::info!(
                        partition,
                        first_offset = offset,
                        pos = position.pos,
                        late = position.late.len(),
                        restored = held.len(),
                        "partition state rebuilt from the state topic and the committed position"
                    );
                    e.insert(PartitionState {
                        joiner,
                        rebuilt_from: offset,
                        persisted: held.keys().copied().collect(),
                        suppress_before: position.pos,
                        skip: position.late.iter().copied().collect(),
                        late: position.late.clone(),
                        next: offset,
                    })
                }
            };
            state.next = offset + 1;
            metrics.record_in(1);
            if state.skip.contains(&offset) {
                continue;
            }
            let payload = m.payload().unwrap_or_default();
            let source = format!("kafka:{}/{partition}/{offset}", m.topic());
            let replaying = offset < state.suppress_before;
            match read_record(payload) {
                Ok(record) => {
                    let input = Input {
                        thing: &record.thing,
                        quantity: &record.quantity,
                        time: record.time,
                        time_raw: record.time_raw,
                        result: record.result,
                        seq: offset as u64,
                    };
                    let mut late = false;
                    let mut sends: Vec<(Vec<u8>, String, bool)> = Vec::new();
                    let expired_before = state.joiner.expired_records();
                    state.joiner.push(&input, &mut |event| match event {
                        Event::Joined(j) => {
                            if (j.trigger as i64) >= state.suppress_before {
                                if j.expired {
                                    health.metrics.join_expired_pairs.inc();
                                }
                                out.clear();
                                j.write_json(&mut out);
                                sends.push((out.clone(), j.thing.to_string(), true));
                            }
                        }
                        Event::Rejected(why) => {
                            late |= matches!(why, Rejected::Late { .. });
                            if !replaying {
                                let reason = Reason::from(&why);
                                metrics.dead_letter(&reason);
                                let letter = DeadLetter::new(reason, why.to_string(), source.clone(), payload);
                                sends.push((letter.to_json().into_bytes(), source.clone(), false));
                            }
                        }
                    });
                    if late {
                        state.late.push(offset);
                    }
                    if !replaying {
                        health.metrics.join_expired_records.inc_by(state.joiner.expired_records() - expired_before);
                    }
                    for (value, key, joined) in sends {
                        let topic = if joined { joined_topic } else { dead_topic };
                        send(&producer, topic, &key, &value)?;
                        if joined {
                            metrics.record_out(1);
                        }
                    }
                }
                Err((reason, detail)) if !replaying => {
                    metrics.dead_letter(&reason);
                    let letter = DeadLetter::new(reason, detail, source.clone(), payload);
                    send(&producer, dead_topic, &source, letter.to_json().as_bytes())?;
                }
                Err(_) => {}
            }
            dirty = true;
        }
        if last_lag.elapsed() >= Duration::from_secs(1) {
            // Consumer lag: records in the raw topic not consumed yet.
            let mut lag = 0i64;
            for (partition, state) in &partitions {
                if let Ok((_, high)) = consumer.fetch_watermarks(kafka.topics.raw_name(), *partition, Duration::from_secs(1)) {
                    lag += (high - state.next).max(0);
                }
            }
            metrics.set_lag(lag);
            last_lag = Instant::now();
        }
        if dirty && last_commit.elapsed() >= kafka.transaction_interval {
            commit(&producer, &consumer, kafka, state_topic_name, &mut partitions, &health)?;
            in_transaction.store(false, Ordering::SeqCst);
            dirty = false;
            last_commit = Instant::now();
        }
    }
    if dirty && in_transaction.load(Ordering::SeqCst) {
        commit(&producer, &consumer, kafka, state_topic_name, &mut partitions, &health)?;
    }
    // Closing the consumer revokes its partitions: nothing is open to abort.
    in_transaction.store(false, Ordering::SeqCst);
    Ok(())
}

struct Record<'a> {
    thing: String,
    quantity: String,
    time: i64,
    time_raw: &'a serde_json::value::RawValue,
    result: f64,
}

/// Gives a record from the state topic back to the rules that held it. Its
/// pairs were all committed before (it is older than the committed offset),
/// so whatever it makes certain is dropped.
fn restore(joiner: &mut Joiner, offset: i64, value: &[u8]) {
    #[derive(Deserialize)]
    struct Held {
        #[serde(default)]
        rules: Vec<String>,
    }
    let (Ok(record), Ok(held)) = (read_record(value), serde_json::from_slice::<Held>(value)) else {
        tracing::warn!(offset, "an unreadable record in the join state topic: skipped");
        return;
    };
    let input = Input { thing: &record.thing, quantity: &record.quantity, time: record.time, time_raw: record.time_raw, result: record.result, seq: offset as u64 };
    joiner.restore(&input, &held.rules, &mut |_| {});
}

fn read_record(payload: &[u8]) -> Result<Record<'_>, (Reason, String)> {
    #[derive(Deserialize)]
    struct Raw<'a> {
        thing: String,
        quantity: String,
        #[serde(rename = "phenomenonTime", borrow)]
        time: &'a serde_json::value::RawValue,
        result: f64,
    }
    let raw: Raw<'_> = serde_json::from_slice(payload).map_err(|e| (Reason::MalformedJson, e.to_string()))?;
    let text = raw.time.get();
    let time = parse_timestamp_str(text.trim_matches('"')).map_err(|e| (Reason::BadTimestamp, e.to_string()))?;
    Ok(Record { thing: raw.thing, quantity: raw.quantity, time, time_raw: raw.time, result: raw.result })
}

fn send(producer: &ThreadedProducer<DefaultProducerContext>, topic: &str, key: &str, value: &[u8]) -> anyhow::Result<()> {
    crate::kafka::enqueue(producer, BaseRecord::to(topic).key(key).payload(value))
}

fn committed_position<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str, partition: i32) -> anyhow::Result<CommitPosition> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    // The group coordinator may have just gone (its broker died).
    let committed = crate::kafka::retried(&format!("read the committed position of {topic}/{partition}"), TIMEOUT, || {
        consumer.committed_offsets(tpl.clone(), TIMEOUT)
    })?;
    let metadata = committed.elements().first().map(|e| e.metadata().to_string()).unwrap_or_default();
    if metadata.is_empty() {
        return Ok(CommitPosition::default());
    }
    serde_json::from_str(&metadata).map_err(|e| anyhow::anyhow!("committed metadata of {topic}/{partition} is not ours ({metadata:?}): {e}"))
}

/// Commits the transaction with, per partition, the offset a replay starts
/// from, the held records older than it in the state topic, and the
/// position consumed.
fn commit<C: ConsumerContext>(
    producer: &ThreadedProducer<DefaultProducerContext>,
    consumer: &BaseConsumer<C>,
    kafka: &KafkaConfig,
    state_topic: &str,
    partitions: &mut HashMap<i32, PartitionState>,
    health: &Health,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let topic = kafka.topics.raw_name();
    let mut offsets = TopicPartitionList::new();
    for (partition, state) in partitions.iter_mut() {
        let (oldest, position) = state.commit_position(*partition, kafka.replay_limit);
        let held = state.joiner.held_before(oldest as u64);
        let written = state_topic::sync(producer, state_topic, *partition, &mut state.persisted, &held)?;
        if written > 0 {
            health.metrics.join_state_writes.inc_by(written as u64);
        }
        offsets.add_partition_offset(topic, *partition, Offset::Offset(oldest))?;
        if let Some(mut e) = offsets.find_partition(topic, *partition) {
            e.set_metadata(serde_json::to_string(&position).expect("a position always serializes"));
        }
        let label = crate::metrics::PartitionLabel { partition: *partition };
        health.metrics.join_state_records.get_or_create(&label).set(state.joiner.retained() as i64);
    }
    // librdkafka's commit flushes in 100 ms slices: deliver first.
    while producer.in_flight_count() > 0 {
        producer.poll(Duration::from_millis(1));
    }
    let group = consumer.group_metadata().ok_or_else(|| anyhow::anyhow!("no consumer group metadata"))?;
    let result = producer
        .send_offsets_to_transaction(&offsets, &group, TIMEOUT)
        .and_then(|()| producer.commit_transaction(TIMEOUT));
    let metrics = health.metrics.stage("join");
    match result {
        Ok(()) => {
            if tracing::enabled!(tracing::Level::DEBUG) {
                for e in offsets.elements() {
                    tracing::debug!(partition = e.partition(), offset = ?e.offset(), position = e.metadata(), "transaction committed");
                }
            }
            metrics.batch(offsets.count());
            health.metrics.transaction_seconds.observe(started.elapsed().as_secs_f64());
            Ok(())
        }
        Err(e) => {
            metrics.error("transaction_aborted");
            if let Some(code) = e.rdkafka_error_code() {
                if matches!(code, rdkafka::types::RDKafkaErrorCode::Fenced | rdkafka::types::RDKafkaErrorCode::ProducerFenced) {
                    anyhow::bail!("this join worker was fenced by a newer instance: stopping ({e})");
                }
            }
            let _ = producer.abort_transaction(TIMEOUT);
            // The aborted work must be redone: rebuild every partition from
            // its committed offset.
            for (partition, _) in partitions.drain() {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(topic, partition);
                let committed = consumer.committed_offsets(tpl, TIMEOUT)?;
                if let Some(e) = committed.elements().first() {
                    let offset = match e.offset() {
                        Offset::Offset(o) => Offset::Offset(o),
                        _ => Offset::Beginning,
                    };
                    consumer.seek(topic, partition, offset, TIMEOUT)?;
                }
            }
            tracing::warn!(error = %e, "transaction aborted; replaying from the committed offsets");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_config::PipelineConfig;

    fn state(suppress_before: i64, next: i64) -> PartitionState {
        let config = PipelineConfig::from_yaml("joins:\n  - {name: power, left: 'actSpeed_(C\\d+)', right: 'vaTorque_(C\\d+)'}\n").unwrap();
        PartitionState {
            joiner: Joiner::new(&config.joins).unwrap(),
            rebuilt_from: 1003,
            persisted: BTreeSet::new(),
            suppress_before,
            skip: BTreeSet::new(),
            late: Vec::new(),
            next,
        }
    }

    #[test]
    fn a_replaying_partition_never_commits_an_earlier_position() {
        // Rebuilt from offset 1003 after 1041 was committed: one record in.
        let (offset, position) = state(1041, 1004).commit_position(0, 100_000);
        assert_eq!((offset, position.pos), (1004, 1041));
        // Past the old position, the consumed position counts.
        assert_eq!(state(1041, 1100).commit_position(0, 100_000).1.pos, 1100);
    }

    fn push(state: &mut PartitionState, offset: i64, thing: &str, quantity: &str, time: i64) {
        let raw = serde_json::value::to_raw_value(&time).unwrap();
        let input = Input { thing, quantity, time: time * 1_000_000, time_raw: &raw, result: 1.0, seq: offset as u64 };
        state.joiner.push(&input, &mut |_| {});
        state.next = offset + 1;
    }

    #[test]
    fn the_committed_offset_stays_within_the_replay_limit_and_never_goes_back() {
        // Machine M1's speed record at 1010 waits for torque that never
        // comes, while machine M2 flows: without a limit it would pin the
        // offset.
        let mut s = state(0, 1003);
        push(&mut s, 1010, "M1", "actSpeed_C11", 1_000);
        for offset in 1011..1100 {
            let quantity = if offset % 2 == 0 { "actSpeed_C11" } else { "vaTorque_C11" };
            push(&mut s, offset, "M2", quantity, 1_000 + offset);
        }
        assert_eq!(s.joiner.min_retained_seq(), Some(1010));
        assert_eq!(s.commit_position(0, 1_000).0, 1010, "within the limit: the oldest held record");
        assert_eq!(s.commit_position(0, 50).0, 1050, "50 records behind the position at most");
        assert_eq!(s.commit_position(0, u64::MAX).0, 1010, "a limit past i64 is no limit (and never past the position)");
        let held = s.joiner.held_before(1050);
        assert_eq!(held.keys().copied().collect::<Vec<_>>(), vec![1010], "what the state topic must keep");
        assert_eq!(held[&1010].rules, vec!["power".to_string()]);
        // Rebuilt from 1050: the restored record is older, the offset stays.
        let mut rebuilt = state(1100, 1050);
        rebuilt.rebuilt_from = 1050;
        push(&mut rebuilt, 1010, "M1", "actSpeed_C11", 1_000);
        rebuilt.next = 1051;
        assert_eq!(rebuilt.commit_position(0, 1_000).0, 1050);
    }
}
