//! The narrow record (one quantity of one machine at one time) and the
//! timestamps it carries.

use serde::{Deserialize, Serialize};

/// One measured value: the Kafka value of the raw topic, as JSON
/// `{"thing":"R0815","quantity":"actSpeed_C11","phenomenonTime":1554096380468,"result":288.2}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NarrowRecord {
    pub thing: String,
    pub quantity: String,
    /// The time exactly as it was read (a number or an RFC 3339 string), so
    /// that outputs can be traced back to their inputs.
    pub phenomenon_time: serde_json::Value,
    pub result: f64,
}

impl NarrowRecord {
    /// The record's time in epoch nanoseconds.
    pub fn time_nanos(&self) -> Result<i64, TimestampError> {
        parse_timestamp(&self.phenomenon_time)
    }
}

/// A timestamp that cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimestampError {
    #[error("timestamp {0} is not a finite number")]
    NotFinite(String),
    #[error("timestamp {0:?} is neither epoch seconds/ms/us/ns nor RFC 3339")]
    Unreadable(String),
    #[error("timestamp is {0}, expected a number or an RFC 3339 string")]
    WrongType(&'static str),
    #[error("timestamp {0} is before 1970 or too far in the future")]
    OutOfRange(String),
}

/// Unit of an epoch number, told apart by magnitude as the seed does:
/// below 1e11 seconds, below 1e14 milliseconds, below 1e17 microseconds,
/// otherwise nanoseconds.
pub fn epoch_to_nanos(value: f64) -> Result<i64, TimestampError> {
    if !value.is_finite() {
        return Err(TimestampError::NotFinite(value.to_string()));
    }
    if value < 0.0 {
        return Err(TimestampError::OutOfRange(value.to_string()));
    }
    let nanos = if value < 1e11 {
        value * 1e9
    } else if value < 1e14 {
        value * 1e6
    } else if value < 1e17 {
        value * 1e3
    } else {
        value
    };
    if nanos >= i64::MAX as f64 {
        return Err(TimestampError::OutOfRange(value.to_string()));
    }
    Ok(nanos.round() as i64)
}

/// Integer epoch values keep full precision (a float loses nanoseconds).
pub fn epoch_int_to_nanos(value: i64) -> Result<i64, TimestampError> {
    if value < 0 {
        return Err(TimestampError::OutOfRange(value.to_string()));
    }
    let nanos = if value < 100_000_000_000 {
        value.checked_mul(1_000_000_000)
    } else if value < 100_000_000_000_000 {
        value.checked_mul(1_000_000)
    } else if value < 100_000_000_000_000_000 {
        value.checked_mul(1_000)
    } else {
        Some(value)
    };
    nanos.ok_or_else(|| TimestampError::OutOfRange(value.to_string()))
}

/// Reads a JSON timestamp: an epoch number in any of four units, a numeric
/// string, or RFC 3339.
pub fn parse_timestamp(value: &serde_json::Value) -> Result<i64, TimestampError> {
    use serde_json::Value;
    match value {
        Value::Number(n) => match n.as_i64() {
            Some(i) => epoch_int_to_nanos(i),
            None => epoch_to_nanos(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => parse_timestamp_str(s),
        Value::Null => Err(TimestampError::WrongType("null")),
        Value::Bool(_) => Err(TimestampError::WrongType("a boolean")),
        Value::Array(_) => Err(TimestampError::WrongType("an array")),
        Value::Object(_) => Err(TimestampError::WrongType("an object")),
    }
}

/// Reads a timestamp given as text.
pub fn parse_timestamp_str(s: &str) -> Result<i64, TimestampError> {
    let t = s.trim();
    if let Ok(i) = t.parse::<i64>() {
        return epoch_int_to_nanos(i);
    }
    if let Ok(f) = t.parse::<f64>() {
        return epoch_to_nanos(f);
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .and_then(|d| d.timestamp_nanos_opt())
        .filter(|n| *n >= 0)
        .ok_or_else(|| TimestampError::Unreadable(s.to_string()))
}

/// A time written in the same form as another timestamp (see
/// [`format_time_like`]).
#[derive(Clone, Debug, PartialEq)]
pub enum TimeValue {
    Integer(i64),
    Float(f64),
    Text(String),
}

impl Serialize for TimeValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TimeValue::Integer(i) => s.serialize_i64(*i),
            TimeValue::Float(f) => s.serialize_f64(*f),
            TimeValue::Text(t) => s.serialize_str(t),
        }
    }
}

impl std::fmt::Display for TimeValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TimeValue::Integer(i) => write!(f, "{i}"),
            TimeValue::Float(x) => write!(f, "{x:?}"),
            TimeValue::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// Writes `nanos` in the same form as `sample` (the JSON text of another
/// timestamp): the same epoch unit for numbers (an integer when exact),
/// RFC 3339 for strings. Joined records thus read like their inputs.
pub fn format_time_like(nanos: i64, sample: &str) -> TimeValue {
    let sample = sample.trim();
    if let Some(text) = sample.strip_prefix('"') {
        let text = text.trim_end_matches('"');
        if text.parse::<f64>().is_err() {
            let t = chrono::DateTime::from_timestamp_nanos(nanos);
            return TimeValue::Text(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
        }
        // A numeric string: answer with a number of the same unit.
        return format_time_like(nanos, text);
    }
    // Magnitude from the number of integer digits: no float parse needed.
    let digits = sample.trim_start_matches('-').split(['.', 'e', 'E']).next().map_or(13, str::len);
    let per_unit: i64 = match digits {
        0..=11 => 1_000_000_000,
        12..=14 => 1_000_000,
        15..=17 => 1_000,
        _ => 1,
    };
    if nanos % per_unit == 0 {
        TimeValue::Integer(nanos / per_unit)
    } else {
        TimeValue::Float(nanos as f64 / per_unit as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn units_are_told_apart_by_magnitude() {
        let ms = 1_554_096_380_468_i64;
        let want = ms * 1_000_000;
        assert_eq!(parse_timestamp(&json!(1_554_096_380)).unwrap(), 1_554_096_380 * 1_000_000_000);
        assert_eq!(parse_timestamp(&json!(ms)).unwrap(), want);
        assert_eq!(parse_timestamp(&json!(ms * 1000)).unwrap(), want);
        assert_eq!(parse_timestamp(&json!(ms * 1_000_000)).unwrap(), want);
        assert_eq!(parse_timestamp(&json!(1_554_096_380.468)).unwrap(), want);
    }

    #[test]
    fn rfc3339_and_numeric_strings() {
        assert_eq!(parse_timestamp(&json!("2019-04-01T05:26:20.468Z")).unwrap(), 1_554_096_380_468_000_000);
        assert_eq!(parse_timestamp(&json!("1554096380468")).unwrap(), 1_554_096_380_468_000_000);
    }

    #[test]
    fn times_are_written_like_their_sample() {
        let ns = 1_554_096_380_468_000_000;
        let f = |n, s| format_time_like(n, s).to_string();
        assert_eq!(f(ns, "1554096380468"), "1554096380468");
        assert_eq!(f(ns + 500_000, "1554096380468"), "1554096380468.5");
        assert_eq!(f(ns, "1554096380"), "1554096380.468");
        assert_eq!(f(ns, "\"2019-04-01T05:26:20Z\""), "\"2019-04-01T05:26:20.468Z\"");
        assert_eq!(f(ns, "\"1554096380468\""), "1554096380468");
    }

    #[test]
    fn bad_timestamps_say_why() {
        assert!(matches!(parse_timestamp(&json!("yesterday")), Err(TimestampError::Unreadable(_))));
        assert!(matches!(parse_timestamp(&json!(null)), Err(TimestampError::WrongType("null"))));
        assert!(matches!(parse_timestamp(&json!(-5)), Err(TimestampError::OutOfRange(_))));
    }
}
