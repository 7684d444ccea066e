//! Wide machine messages: one MQTT payload holding several quantities of a
//! machine at one time, split into narrow records.
//!
//! `{"Thing":"R0815","Timestamp":1554096380468,"vaTorque_C11":-4.44,"actSpeed_C11":288.2,"id":"..."}`
//! becomes one [`NarrowRecord`] per quantity. Pure: bytes in, records and
//! at most one problem out; the caller sends problems to the dead letters.

use regex::Regex;
use serde_json::{Map, Value};

use millrace_config::{ConfigError, PayloadFormat};
use millrace_join::record::{parse_timestamp, NarrowRecord, TimestampError};

use crate::dead_letter::Reason;

/// Why (part of) a message was not turned into records.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub reason: Reason,
    pub detail: String,
}

/// What a message became. A message with one bad quantity still yields its
/// good ones, and the problem names the bad field.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Split {
    pub records: Vec<NarrowRecord>,
    pub problem: Option<Problem>,
}

/// Splits wide messages per a [`PayloadFormat`], compiled once.
#[derive(Clone, Debug)]
pub struct Splitter {
    thing_field: String,
    timestamp_field: String,
    id_field: String,
    /// `None`: every numeric field is a quantity.
    quantities: Option<Regex>,
    max_bytes: usize,
}

impl Splitter {
    pub fn new(format: &PayloadFormat, max_bytes: usize) -> Result<Self, ConfigError> {
        // Anchored: the expression names whole quantity names.
        let quantities = format
            .quantities
            .as_ref()
            .map(|q| Regex::new(&format!("^(?:{q})$")))
            .transpose()
            .map_err(|e| ConfigError::Invalid { field: "payload.quantities".into(), message: e.to_string() })?;
        Ok(Self {
            thing_field: format.thing_field.clone(),
            timestamp_field: format.timestamp_field.clone(),
            id_field: format.id_field.clone(),
            quantities,
            max_bytes,
        })
    }

    /// Splits one payload.
    pub fn split(&self, payload: &[u8]) -> Split {
        if payload.len() > self.max_bytes {
            return reject(Reason::Oversized, format!("message is {} bytes, the limit is {}", payload.len(), self.max_bytes));
        }
        let (object, mut non_finite) = match parse_object(payload) {
            Ok(parsed) => parsed,
            Err(problem) => return Split { records: Vec::new(), problem: Some(problem) },
        };
        let thing = match object.get(&self.thing_field) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) => return reject(Reason::MissingField, format!("field {:?} is empty", self.thing_field)),
            Some(other) => return reject(Reason::WrongType, format!("field {:?} is {}, expected a string", self.thing_field, type_name(other))),
            None => return reject(Reason::MissingField, format!("field {:?} is missing", self.thing_field)),
        };
        let time = match object.get(&self.timestamp_field) {
            Some(t) => t,
            None => return reject(Reason::MissingField, format!("field {:?} is missing", self.timestamp_field)),
        };
        if let Err(e) = parse_timestamp(time) {
            let reason = match e {
                TimestampError::WrongType(_) => Reason::WrongType,
                _ => Reason::BadTimestamp,
            };
            return reject(reason, format!("field {:?}: {e}", self.timestamp_field));
        }

        let mut split = Split::default();
        let mut wrong_type = Vec::new();
        for (name, value) in &object {
            if name == &self.thing_field || name == &self.timestamp_field || name == &self.id_field {
                continue;
            }
            let selected = self.quantities.as_ref().map(|q| q.is_match(name));
            if selected == Some(false) {
                non_finite.retain(|n| n != name);
                continue;
            }
            match value {
                Value::Number(n) => split.records.push(NarrowRecord {
                    thing: thing.clone(),
                    quantity: name.clone(),
                    phenomenon_time: time.clone(),
                    result: n.as_f64().unwrap_or(f64::NAN),
                }),
                // Null stands in for a NaN/Infinity token: reported below.
                Value::Null if non_finite.contains(name) => {}
                // Without a quantity filter only numbers are quantities.
                _ if selected.is_none() => {}
                other => wrong_type.push(format!("{name:?} is {}", type_name(other))),
            }
        }
        if !non_finite.is_empty() {
            non_finite.sort();
            split.problem = Some(Problem {
                reason: Reason::NonFiniteValue,
                detail: format!("not a finite number: {}", non_finite.join(", ")),
            });
        } else if !wrong_type.is_empty() {
            split.problem = Some(Problem {
                reason: Reason::WrongType,
                detail: format!("expected numbers: {}", wrong_type.join(", ")),
            });
        }
        split
    }
}

fn reject(reason: Reason, detail: String) -> Split {
    Split { records: Vec::new(), problem: Some(Problem { reason, detail }) }
}

/// Parses a JSON object. Producers written in Python send bare `NaN` and
/// `Infinity`, which JSON does not allow: those values are read as null and
/// their field names returned, so the rest of the message survives.
fn parse_object(payload: &[u8]) -> Result<(Map<String, Value>, Vec<String>), Problem> {
    let value: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(first_error) => {
            let Some(patched) = null_out_non_finite(payload) else {
                return Err(Problem { reason: Reason::MalformedJson, detail: first_error.to_string() });
            };
            let value: Value = serde_json::from_slice(&patched.bytes)
                .map_err(|_| Problem { reason: Reason::MalformedJson, detail: first_error.to_string() })?;
            return match value {
                Value::Object(map) => {
                    let names = map
                        .iter()
                        .filter(|(_, v)| v.is_null())
                        .map(|(k, _)| k.clone())
                        .filter(|k| patched.nulled_keys.contains(k))
                        .collect();
                    Ok((map, names))
                }
                other => Err(Problem { reason: Reason::NotAnObject, detail: format!("message is {}, expected an object", type_name(&other)) }),
            };
        }
    };
    match value {
        Value::Object(map) => Ok((map, Vec::new())),
        other => Err(Problem { reason: Reason::NotAnObject, detail: format!("message is {}, expected an object", type_name(&other)) }),
    }
}

struct Patched {
    bytes: Vec<u8>,
    nulled_keys: Vec<String>,
}

/// Replaces the tokens `NaN`, `Infinity` and `-Infinity` outside strings by
/// `null`, remembering the key each stood under. `None` when there are none.
fn null_out_non_finite(payload: &[u8]) -> Option<Patched> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut out = String::with_capacity(text.len());
    let mut nulled_keys = Vec::new();
    let mut last_string = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let start = i + 1;
                let mut end = start;
                out.push('"');
                while let Some((j, d)) = chars.next() {
                    out.push(d);
                    if d == '\\' {
                        if let Some((_, e)) = chars.next() {
                            out.push(e);
                        }
                    } else if d == '"' {
                        end = j;
                        break;
                    }
                }
                last_string = text[start..end].to_string();
            }
            _ => {
                let rest = &text[i..];
                let token = ["-Infinity", "Infinity", "NaN"].into_iter().find(|t| rest.starts_with(t));
                if let Some(token) = token {
                    out.push_str("null");
                    nulled_keys.push(last_string.clone());
                    for _ in 1..token.len() {
                        chars.next();
                    }
                } else {
                    out.push(c);
                }
            }
        }
    }
    (!nulled_keys.is_empty()).then(|| Patched { bytes: out.into_bytes(), nulled_keys })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splitter() -> Splitter {
        Splitter::new(&PayloadFormat::default(), 1024).unwrap()
    }

    fn quantities(s: &Split) -> Vec<(&str, f64)> {
        let mut q: Vec<_> = s.records.iter().map(|r| (r.quantity.as_str(), r.result)).collect();
        q.sort_by(|a, b| a.0.cmp(b.0));
        q
    }

    #[test]
    fn a_wide_message_becomes_one_record_per_quantity() {
        let s = splitter().split(br#"{"Thing":"R0815","Timestamp":1554096380468,"vaTorque_C11":-4.44,"actSpeed_C11":288.2,"id":"c352"}"#);
        assert_eq!(s.problem, None);
        assert_eq!(quantities(&s), vec![("actSpeed_C11", 288.2), ("vaTorque_C11", -4.44)]);
        assert!(s.records.iter().all(|r| r.thing == "R0815" && r.phenomenon_time == serde_json::json!(1554096380468_i64)));
    }

    #[test]
    fn the_quantity_filter_selects_whole_names() {
        let format = PayloadFormat { quantities: Some("actSpeed_.*|vaTorque_C11".into()), ..Default::default() };
        let s = Splitter::new(&format, 1024).unwrap().split(br#"{"Thing":"a","Timestamp":1,"vaTorque_C11":1,"vaTorque_C111":2,"actSpeed_C1":3,"vaLoad":4}"#);
        assert_eq!(quantities(&s), vec![("actSpeed_C1", 3.0), ("vaTorque_C11", 1.0)]);
    }

    #[test]
    fn bad_messages_are_rejected_with_their_reason() {
        let cases: &[(&[u8], Reason)] = &[
            (b"{not json", Reason::MalformedJson),
            (b"[1,2]", Reason::NotAnObject),
            (br#"{"Timestamp":1,"a":1}"#, Reason::MissingField),
            (br#"{"Thing":"m","a":1}"#, Reason::MissingField),
            (br#"{"Thing":7,"Timestamp":1,"a":1}"#, Reason::WrongType),
            (br#"{"Thing":"m","Timestamp":"tomorrow","a":1}"#, Reason::BadTimestamp),
            (br#"{"Thing":"m","Timestamp":true,"a":1}"#, Reason::WrongType),
            (&[0xff, 0xfe, 0x00], Reason::MalformedJson),
        ];
        for (payload, reason) in cases {
            let s = splitter().split(payload);
            assert!(s.records.is_empty(), "{:?}", String::from_utf8_lossy(payload));
            assert_eq!(s.problem.as_ref().map(|p| &p.reason), Some(reason), "{:?}", String::from_utf8_lossy(payload));
        }
    }

    #[test]
    fn oversized_messages_are_rejected_before_parsing() {
        let big = format!(r#"{{"Thing":"m","Timestamp":1,"a":"{}"}}"#, "x".repeat(2000));
        assert_eq!(splitter().split(big.as_bytes()).problem.unwrap().reason, Reason::Oversized);
    }

    #[test]
    fn non_finite_values_are_reported_and_the_rest_survives() {
        let s = splitter().split(br#"{"Thing":"m","Timestamp":1,"a":NaN,"b":2.5,"c":-Infinity,"s":"NaN"}"#);
        assert_eq!(quantities(&s), vec![("b", 2.5)]);
        let p = s.problem.unwrap();
        assert_eq!(p.reason, Reason::NonFiniteValue);
        assert_eq!(p.detail, "not a finite number: a, c");
    }

    #[test]
    fn filtered_quantities_of_the_wrong_type_are_reported() {
        let format = PayloadFormat { quantities: Some("a|b".into()), ..Default::default() };
        let s = Splitter::new(&format, 1024).unwrap().split(br#"{"Thing":"m","Timestamp":1,"a":"high","b":2,"note":"x"}"#);
        assert_eq!(quantities(&s), vec![("b", 2.0)]);
        assert_eq!(s.problem.unwrap().reason, Reason::WrongType);
    }

    #[test]
    fn every_shared_test_message_splits_cleanly() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/test_events.jsonl");
        let Ok(text) = std::fs::read_to_string(path) else {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "missing {path}");
            eprintln!("skipped: {path} not found");
            return;
        };
        let splitter = splitter();
        let mut records = 0;
        for line in text.lines() {
            let s = splitter.split(line.as_bytes());
            assert_eq!(s.problem, None, "{line}");
            records += s.records.len();
        }
        assert_eq!(records, 19_825);
    }
}
