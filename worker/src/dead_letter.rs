//! Dead letters: input a stage could not use, kept with the reason and the
//! original bytes so that nothing is lost silently.

use serde::{Deserialize, Serialize};

use millrace_join::engine::LateWhy;
use millrace_join::joiner::Rejected;

/// Why an input could not be used. The `as_str` names are the metric label
/// values and the `reason` field of the dead-letter envelope.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The bytes are not JSON (or not UTF-8).
    MalformedJson,
    /// Valid JSON, but not an object.
    NotAnObject,
    /// A required field (thing or timestamp) is absent.
    MissingField,
    /// A field has the wrong JSON type.
    WrongType,
    /// A quantity is NaN or infinite.
    NonFiniteValue,
    /// The message is larger than the configured limit.
    Oversized,
    /// The timestamp cannot be read.
    BadTimestamp,
    /// A record older than its side's last accepted one (join stage).
    Late,
    /// A record older than its key's newest minus the rule's stateHorizon.
    BeyondHorizon,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::MalformedJson,
        Reason::NotAnObject,
        Reason::MissingField,
        Reason::WrongType,
        Reason::NonFiniteValue,
        Reason::Oversized,
        Reason::BadTimestamp,
        Reason::Late,
        Reason::BeyondHorizon,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::MalformedJson => "malformed_json",
            Reason::NotAnObject => "not_an_object",
            Reason::MissingField => "missing_field",
            Reason::WrongType => "wrong_type",
            Reason::NonFiniteValue => "non_finite_value",
            Reason::Oversized => "oversized",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::Late => "late",
            Reason::BeyondHorizon => "beyond_horizon",
        }
    }
}

impl From<&Rejected> for Reason {
    fn from(why: &Rejected) -> Self {
        match why {
            Rejected::Late { late, .. } => match late.why {
                LateWhy::OwnSide => Reason::Late,
                LateWhy::BeyondHorizon { .. } => Reason::BeyondHorizon,
            },
            Rejected::NotANumber { .. } => Reason::NonFiniteValue,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected input: what was wrong, where it came from, and its bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub reason: Reason,
    /// A sentence a person can act on, e.g. `field "Timestamp" is missing`.
    pub detail: String,
    /// Where the input came from: an MQTT topic, a Kafka topic/partition/offset.
    pub source: String,
    /// The original bytes, as text when they are UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The original bytes, base64, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

impl DeadLetter {
    pub fn new(reason: Reason, detail: impl Into<String>, source: impl Into<String>, bytes: &[u8]) -> Self {
        let (payload, payload_base64) = match std::str::from_utf8(bytes) {
            Ok(s) => (Some(s.to_string()), None),
            Err(_) => (None, Some(base64_encode(bytes))),
        };
        Self { reason, detail: detail.into(), source: source.into(), payload, payload_base64 }
    }

    /// The JSON line written to the dead-letter topic or file.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a dead letter always serializes")
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_payload_stays_text_and_binary_becomes_base64() {
        let d = DeadLetter::new(Reason::MalformedJson, "not JSON", "machines/a", b"{oops");
        assert_eq!(d.payload.as_deref(), Some("{oops"));
        let d = DeadLetter::new(Reason::MalformedJson, "not UTF-8", "machines/a", &[0xff, 0xfe]);
        assert_eq!(d.payload_base64.as_deref(), Some("//4="));
        let json: serde_json::Value = serde_json::from_str(&d.to_json()).unwrap();
        assert_eq!(json["reason"], "malformed_json");
    }
}

/// Where a stage sends its dead letters.
#[derive(Clone)]
pub enum DeadLetterSink {
    /// The pipeline's dead-letter topic, keyed by source.
    Kafka { producer: rdkafka::producer::FutureProducer, topic: String },
    /// A JSONL file (embedded mode), appended and flushed per letter.
    File(std::sync::Arc<std::sync::Mutex<std::fs::File>>),
}

impl DeadLetterSink {
    pub fn file(path: &std::path::Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self::File(std::sync::Arc::new(std::sync::Mutex::new(file))))
    }

    /// Stores a letter; the returned delivery completes once it is durable.
    pub async fn send(&self, letter: &DeadLetter) -> crate::kafka::Delivery {
        use futures::FutureExt;
        let line = letter.to_json();
        match self {
            DeadLetterSink::Kafka { producer, topic } => {
                crate::kafka::send(producer, topic, &letter.source, line.as_bytes()).await
            }
            DeadLetterSink::File(file) => {
                use std::io::Write;
                let result = {
                    let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
                    writeln!(f, "{line}").and_then(|_| f.flush())
                };
                async move { result.map_err(|e| format!("cannot write a dead letter: {e}")) }.boxed()
            }
        }
    }
}
