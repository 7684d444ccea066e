//! InfluxDB 1.x line protocol for narrow and joined records.
//!
//! A point is `measurement,quantity=Q,thing=T[,tag=v...] result=R TIME`,
//! tags sorted by key (what InfluxDB stores anyway, and cheaper for it to
//! parse). Time plus tags identify a point, so writing a record twice
//! leaves one point: replays after a crash are harmless.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Precision of the timestamps in a write request.
pub const PRECISION: &str = "ns";

/// Writes points for one measurement with a fixed set of extra tags.
#[derive(Clone, Debug)]
pub struct PointWriter {
    measurement: String,
    /// Extra tags, pre-escaped, each as `,key=value`, merged in key order
    /// with `quantity` and `thing`.
    before: String,
    between: String,
    after: String,
}

impl PointWriter {
    pub fn new(measurement: &str, tags: &BTreeMap<String, String>) -> Self {
        let mut before = String::new();
        let mut between = String::new();
        let mut after = String::new();
        for (k, v) in tags {
            if k == "quantity" || k == "thing" || v.is_empty() {
                continue; // the record's own tags win; empty tag values are invalid
            }
            let target = if k.as_str() < "quantity" {
                &mut before
            } else if k.as_str() < "thing" {
                &mut between
            } else {
                &mut after
            };
            target.push(',');
            escape_into(target, k, TAG);
            target.push('=');
            escape_into(target, v, TAG);
        }
        let mut m = String::new();
        escape_into(&mut m, measurement, MEASUREMENT);
        Self { measurement: m, before, between, after }
    }

    /// Appends one point line (with its trailing newline) to `out`.
    pub fn write(&self, out: &mut String, thing: &str, quantity: &str, result: f64, time_nanos: i64) {
        out.push_str(&self.measurement);
        out.push_str(&self.before);
        out.push_str(",quantity=");
        escape_into(out, if quantity.is_empty() { "_" } else { quantity }, TAG);
        out.push_str(&self.between);
        out.push_str(",thing=");
        escape_into(out, if thing.is_empty() { "_" } else { thing }, TAG);
        out.push_str(&self.after);
        out.push_str(" result=");
        // `{:?}` keeps a decimal point (`3.0`), so InfluxDB stores a float
        // even for whole numbers and the field type never conflicts.
        let _ = write!(out, "{result:?}");
        out.push(' ');
        let _ = write!(out, "{time_nanos}");
        out.push('\n');
    }
}

const MEASUREMENT: &[char] = &[',', ' '];
const TAG: &[char] = &[',', '=', ' '];

fn escape_into(out: &mut String, s: &str, special: &[char]) {
    for c in s.chars() {
        if special.contains(&c) || c == '\\' {
            out.push('\\');
        }
        if c == '\n' {
            out.push_str("\\n");
            continue;
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_has_sorted_tags_a_float_field_and_nanoseconds() {
        let tags = BTreeMap::from([("site".to_string(), "plant 1".to_string()), ("area".to_string(), "a".to_string())]);
        let w = PointWriter::new("machine", &tags);
        let mut out = String::new();
        w.write(&mut out, "R0815", "actSpeed_C11", 288.0, 1_554_096_380_468_000_000);
        assert_eq!(out, "machine,area=a,quantity=actSpeed_C11,site=plant\\ 1,thing=R0815 result=288.0 1554096380468000000\n");
    }

    #[test]
    fn special_characters_are_escaped() {
        let w = PointWriter::new("my m,x", &BTreeMap::new());
        let mut out = String::new();
        w.write(&mut out, "a=b", "q,1", -0.5, 1);
        assert_eq!(out, "my\\ m\\,x,quantity=q\\,1,thing=a\\=b result=-0.5 1\n");
    }
}
