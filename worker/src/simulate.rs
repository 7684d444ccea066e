//! `millrace-worker simulate`: wide machine messages to MQTT, replayed from
//! a JSONL file (in time order, optionally looping and re-timed to the
//! present) or generated for N machines, at a chosen rate.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::{Map, Value};

use millrace_config::PayloadFormat;
use millrace_join::record::{format_time_like, parse_timestamp};

/// Where messages come from.
pub enum Source {
    /// Wide messages, one JSON object a line.
    File { path: PathBuf, keep_order: bool },
    /// Each line sent exactly as it is, in file order, even when it is not
    /// JSON (for trying the dead letters).
    Verbatim { path: PathBuf },
    /// Synthetic machines: spindle speed, torque, current and load of one axis.
    Generate { machines: usize, interval: Duration },
}

pub struct Options {
    pub url: String,
    /// With `mqtts://`: the CA and client certificate files.
    pub tls: Option<millrace_config::TlsFiles>,
    /// Topic; `{thing}` is replaced by the machine's name.
    pub topic: String,
    pub qos: u8,
    /// Messages per second; 0: as fast as the broker takes them.
    pub rate: u64,
    /// Stop after this many messages (generated data and loops need it or `duration`).
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    /// Replay the file again and again (shifting times by its span each time).
    pub repeat: bool,
    /// Shift the file's times so that the first message is now.
    pub retime: bool,
    pub format: PayloadFormat,
    pub progress: bool,
}

/// What was sent.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub published: u64,
    pub elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        write!(f, "published {} messages in {:.1} s ({:.0} messages/s)", self.published, secs, self.published as f64 / secs)
    }
}

/// The messages of a file, parsed, in time order unless `keep_order`.
pub fn read_messages(path: &PathBuf, format: &PayloadFormat, keep_order: bool) -> anyhow::Result<Vec<(i64, Map<String, Value>)>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut messages = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let object: Map<String, Value> =
            serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{}:{}: not a JSON object: {e}", path.display(), i + 1))?;
        let time = object
            .get(&format.timestamp_field)
            .ok_or_else(|| anyhow::anyhow!("{}:{}: no {:?} field", path.display(), i + 1, format.timestamp_field))
            .and_then(|t| parse_timestamp(t).map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1)))?;
        messages.push((time, object));
    }
    if !keep_order {
        // Stable: messages of equal time keep their file order.
        messages.sort_by_key(|(t, _)| *t);
    }
    Ok(messages)
}

/// A synthetic wide message of machine `m` at `time` (epoch ms).
pub fn generate_message(format: &PayloadFormat, m: usize, n: u64, time_ms: i64) -> Map<String, Value> {
    let phase = n as f64 / 50.0 + m as f64;
    let speed = 3000.0 + 1500.0 * phase.sin();
    let torque = 12.0 + 6.0 * (phase * 0.7).cos();
    let mut o = Map::new();
    o.insert(format.thing_field.clone(), Value::from(format!("M{m:04}")));
    o.insert(format.timestamp_field.clone(), Value::from(time_ms));
    o.insert("actSpeed_C11".into(), Value::from((speed * 10.0).round() / 10.0));
    o.insert("vaTorque_C11".into(), Value::from((torque * 100.0).round() / 100.0));
    o.insert("vaCurr_C11".into(), Value::from(((torque * 0.3) * 1000.0).round() / 1000.0));
    o.insert("vaLoad_C11".into(), Value::from(((speed * torque / 60000.0) * 1000.0).round() / 1000.0));
    o.insert(format.id_field.clone(), Value::from(format!("{m:04}-{n}")));
    o
}

/// Publishes until the source, `count` or `duration` ends, then waits for
/// the broker to acknowledge everything (QoS 1 and 2).
/// How far ahead of its schedule the publisher runs before it sleeps.
const PACING_SLACK: Duration = Duration::from_millis(5);

/// A publish failed because the connection ended: say why it ended, not
/// that a request could not be queued.
async fn connection_failure(connection: &mut tokio::task::JoinHandle<anyhow::Result<()>>, publish_error: rumqttc::ClientError) -> anyhow::Error {
    match tokio::time::timeout(Duration::from_secs(5), connection).await {
        Ok(Ok(Err(cause))) => cause.context("publishing stopped"),
        _ => anyhow::anyhow!("cannot publish: {publish_error}"),
    }
}

pub async fn run(source: Source, options: Options) -> anyhow::Result<Summary> {
    let client_id = format!("millrace-simulate-{:08x}", rand::random::<u32>());
    let mut mqtt = crate::mqtt_broker::options(&client_id, &options.url, options.tls.as_ref())?;
    mqtt.set_keep_alive(Duration::from_secs(30)).set_inflight(u16::MAX).set_max_packet_size(1 << 20, 1 << 20);
    if let Some(c) = crate::credentials::from_env("MQTT")? {
        mqtt.set_credentials(c.username, c.password);
    }
    let (client, mut events) = AsyncClient::new(mqtt, 10_000);
    // A broker under load stops reading for seconds at a time (TCP
    // back-pressure); rumqttc's default 5 s write timeout would end the run.
    let mut network = rumqttc::NetworkOptions::new();
    network.set_connection_timeout(60);
    events.set_network_options(network);
    let qos = crate::ingest::qos(options.qos);
    let (acked_tx, acked_rx) = tokio::sync::watch::channel(0u64);
    let mut connection = tokio::spawn(async move {
        let mut acked = 0u64;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => {
                    acked += 1;
                    let _ = acked_tx.send(acked);
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(anyhow::anyhow!("MQTT connection to the broker failed: {e}")),
            }
        }
    });

    let messages = match &source {
        Source::File { path, keep_order } => read_messages(path, &options.format, *keep_order)?,
        Source::Generate { .. } | Source::Verbatim { .. } => Vec::new(),
    };
    let verbatim: Vec<Vec<u8>> = match &source {
        Source::Verbatim { path } => std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
            .split(|b| *b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .map(<[u8]>::to_vec)
            .collect(),
        _ => Vec::new(),
    };
    if matches!(source, Source::File { .. }) && messages.is_empty() || matches!(source, Source::Verbatim { .. }) && verbatim.is_empty() {
        anyhow::bail!("the file has no messages");
    }
    let limit = match (&source, options.count, options.repeat) {
        (_, Some(n), _) => n,
        (Source::File { .. }, None, false) => messages.len() as u64,
        (Source::Verbatim { .. }, None, false) => verbatim.len() as u64,
        _ => u64::MAX,
    };
    let (first, span) = match (messages.first(), messages.last()) {
        (Some(f), Some(l)) => (f.0, (l.0 - f.0) + 1_000_000),
        _ => (0, 0),
    };
    let now_nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let shift = if options.retime { now_nanos - first } else { 0 };

    let bar = options.progress.then(|| {
        let bar = if limit == u64::MAX { indicatif::ProgressBar::new_spinner() } else { indicatif::ProgressBar::new(limit) };
        // A bar when the count is known; the rate comes in the summary.
        let template = if limit == u64::MAX { "{spinner} {pos} messages, {elapsed}" } else { "{bar:40} {pos}/{len} messages, {elapsed}, eta {eta}" };
        bar.set_style(indicatif::ProgressStyle::with_template(template).expect("a valid template"));
        bar
    });
    let start = Instant::now();
    let mut published = 0u64;
    let mut buf = Vec::with_capacity(512);
    while published < limit && options.duration.is_none_or(|d| start.elapsed() < d) {
        if options.rate > 0 {
            // Pace: never ahead of where the rate says we should be.
            // Sleep only when a few milliseconds ahead: timers are as coarse
            // as a millisecond, so a sleep per message would cap the rate
            // near 1,000 per second.
            let due = Duration::from_secs_f64(published as f64 / options.rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()).filter(|w| *w >= PACING_SLACK) {
                tokio::time::sleep(wait).await;
            }
        }
        if let Source::Verbatim { .. } = &source {
            let line = &verbatim[(published % verbatim.len() as u64) as usize];
            if let Err(e) = client.publish(options.topic.replace("{thing}", "verbatim"), qos, false, line.clone()).await {
                return Err(connection_failure(&mut connection, e).await);
            }
            published += 1;
            continue;
        }
        let message = match &source {
            Source::Verbatim { .. } => unreachable!("sent above"),
            Source::File { .. } => {
                let round = published / messages.len() as u64;
                let (t, object) = &messages[(published % messages.len() as u64) as usize];
                let mut object = object.clone();
                let offset = shift + round as i64 * span;
                if offset != 0 {
                    let sample = object[&options.format.timestamp_field].to_string();
                    object.insert(options.format.timestamp_field.clone(), serde_json::to_value(format_time_like(t + offset, &sample))?);
                }
                object
            }
            Source::Generate { machines, interval } => {
                let tick = published / *machines as u64;
                let time_ms = now_nanos / 1_000_000 + (tick as u128 * interval.as_millis()) as i64;
                generate_message(&options.format, (published % *machines as u64) as usize, tick, time_ms)
            }
        };
        let thing = message.get(&options.format.thing_field).and_then(Value::as_str).unwrap_or("unknown").to_string();
        buf.clear();
        serde_json::to_writer(&mut buf, &message)?;
        if let Err(e) = client.publish(options.topic.replace("{thing}", &thing), qos, false, buf.clone()).await {
            return Err(connection_failure(&mut connection, e).await);
        }
        published += 1;
        if let Some(bar) = &bar {
            if published.is_multiple_of(256) {
                bar.set_position(published);
            }
        }
    }
    if qos != QoS::AtMostOnce {
        let mut acked = acked_rx;
        let waited = tokio::time::timeout(Duration::from_secs(60), acked.wait_for(|n| *n >= published)).await.map(|r| r.is_ok());
        let count = *acked.borrow();
        match waited {
            Ok(true) => {}
            // The connection ended before every acknowledgement came.
            Ok(false) => {
                let cause = match (&mut connection).await {
                    Ok(Err(e)) => e,
                    _ => anyhow::anyhow!("the connection closed"),
                };
                return Err(cause.context(format!("the broker acknowledged {count} of {published} messages")));
            }
            Err(_) => anyhow::bail!("the broker acknowledged {count} of {published} messages within 60 s"),
        }
    }
    let elapsed = start.elapsed();
    client.disconnect().await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(Summary { published, elapsed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_replayed_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.jsonl");
        std::fs::write(&path, "{\"Thing\":\"a\",\"Timestamp\":3000}\n{\"Thing\":\"a\",\"Timestamp\":1000}\n\n{\"Thing\":\"b\",\"Timestamp\":1000}\n").unwrap();
        let m = read_messages(&path, &PayloadFormat::default(), false).unwrap();
        let order: Vec<(&str, i64)> = m.iter().map(|(t, o)| (o["Thing"].as_str().unwrap(), *t / 1_000_000_000)).collect();
        assert_eq!(order, vec![("a", 1000), ("b", 1000), ("a", 3000)], "epoch seconds, sorted, ties in file order");
    }

    #[test]
    fn generated_messages_split_into_four_quantities() {
        let format = PayloadFormat::default();
        let m = generate_message(&format, 3, 10, 1_700_000_000_000);
        let bytes = serde_json::to_vec(&m).unwrap();
        let split = crate::wide::Splitter::new(&format, 4096).unwrap().split(&bytes);
        assert_eq!(split.problem, None);
        assert_eq!(split.records.len(), 4);
        assert!(split.records.iter().all(|r| r.thing == "M0003"));
    }
}
