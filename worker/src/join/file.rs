//! `millrace-worker join-file`: the join over a JSONL file of narrow
//! records, for backfills and for checking the join. Joined records go to
//! the output as JSONL; late and unreadable records go to a separate
//! stream with their reason, never into the output.

use std::borrow::Cow;
use std::io::{BufRead, Write};

use serde::Deserialize;
use serde_json::value::RawValue;

use millrace_join::engine::LateWhy;
use millrace_join::joiner::{Event, Input, Joiner};
use millrace_join::record::parse_timestamp_str;

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    thing: Cow<'a, str>,
    #[serde(borrow)]
    quantity: Cow<'a, str>,
    #[serde(rename = "phenomenonTime", borrow)]
    time: &'a RawValue,
    result: f64,
}

/// Totals of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub lines: u64,
    pub joined: u64,
    pub late: u64,
    /// Arrived older than its key's newest record minus the rule's horizon.
    pub beyond_horizon: u64,
    /// Pairs emitted when their record expired beyond the horizon.
    pub expired_pairs: u64,
    /// Held records dropped by the horizon.
    pub expired_records: u64,
    pub unreadable: u64,
    pub not_a_number: u64,
}

/// Reads `input` to its end, joining with `joiner`; `complete` says the
/// input holds the whole series. `on_progress` gets the bytes read so far.
pub fn run(
    joiner: &mut Joiner,
    mut input: impl BufRead,
    output: &mut impl Write,
    rejects: &mut impl Write,
    complete: bool,
    mut on_progress: impl FnMut(u64),
) -> std::io::Result<Summary> {
    let mut summary = Summary::default();
    let mut line = Vec::with_capacity(256);
    let mut buf = Vec::with_capacity(1024);
    let mut bytes_read = 0u64;
    let mut io_error = None;
    loop {
        line.clear();
        let n = input.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        bytes_read += n as u64;
        summary.lines += 1;
        if summary.lines % 65_536 == 0 {
            on_progress(bytes_read);
        }
        let text = trim(&line);
        if text.is_empty() {
            continue;
        }
        let parsed = serde_json::from_slice::<Line<'_>>(text)
            .map_err(|e| e.to_string())
            .and_then(|l| {
                let raw = l.time.get();
                let time = match raw.strip_prefix('"') {
                    Some(s) => parse_timestamp_str(s.trim_end_matches('"')),
                    None => parse_timestamp_str(raw),
                }
                .map_err(|e| e.to_string())?;
                Ok((l, time))
            });
        let (record, time) = match parsed {
            Ok(p) => p,
            Err(reason) => {
                summary.unreadable += 1;
                writeln!(rejects, "line {}: unreadable: {reason}: {}", summary.lines, String::from_utf8_lossy(text))?;
                continue;
            }
        };
        let input = Input {
            thing: &record.thing,
            quantity: &record.quantity,
            time,
            time_raw: record.time,
            result: record.result,
            seq: summary.lines,
        };
        let lines = summary.lines;
        joiner.push(&input, &mut |event| write_event(event, lines, output, rejects, &mut buf, &mut summary, &mut io_error));
        if let Some(e) = io_error.take() {
            return Err(e);
        }
    }
    if complete {
        let lines = summary.lines;
        joiner.complete(lines + 1, &mut |event| write_event(event, lines, output, rejects, &mut buf, &mut summary, &mut io_error));
        if let Some(e) = io_error.take() {
            return Err(e);
        }
    }
    on_progress(bytes_read);
    output.flush()?;
    summary.expired_records = joiner.expired_records();
    Ok(summary)
}

fn write_event(
    event: Event<'_>,
    line: u64,
    output: &mut impl Write,
    rejects: &mut impl Write,
    buf: &mut Vec<u8>,
    summary: &mut Summary,
    io_error: &mut Option<std::io::Error>,
) {
    let result = match event {
        Event::Joined(j) => {
            summary.joined += 1;
            summary.expired_pairs += u64::from(j.expired);
            buf.clear();
            j.write_json(buf);
            buf.push(b'\n');
            output.write_all(buf)
        }
        Event::Rejected(r) => {
            match r {
                millrace_join::joiner::Rejected::Late { late, .. } => match late.why {
                    LateWhy::OwnSide => summary.late += 1,
                    LateWhy::BeyondHorizon { .. } => summary.beyond_horizon += 1,
                },
                millrace_join::joiner::Rejected::NotANumber { .. } => summary.not_a_number += 1,
            }
            writeln!(rejects, "line {line}: {r}")
        }
    };
    if let Err(e) = result {
        io_error.get_or_insert(e);
    }
}

fn trim(line: &[u8]) -> &[u8] {
    let end = line.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    &line[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_config::{JoinRuleConfig, TimePolicy};

    fn joiner() -> Joiner {
        Joiner::new(&[JoinRuleConfig {
            name: "power".into(),
            left: r"actSpeed_(C\d+)".into(),
            right: r"vaTorque_(C\d+)".into(),
            output: Some("vaPower_$1".into()),
            expression: Some("left*right".into()),
            time: TimePolicy::Mean,
            max_delta: None,
            max_latency: None,
            reorder_window: None,
            state_horizon: None,
        }])
        .unwrap()
    }

    #[test]
    fn joins_a_small_file_and_reports_the_rest() {
        let input = br#"{"thing":"R1","quantity":"actSpeed_C11","phenomenonTime":1000,"result":2}
{"thing":"R1","quantity":"vaTorque_C11","phenomenonTime":1003,"result":3}
{"thing":"R1","quantity":"vaTorque_C12","phenomenonTime":1003,"result":3}
{"thing":"R1","quantity":"actSpeed_C11","phenomenonTime":999,"result":1}
not json
{"thing":"R1","quantity":"actSpeed_C11","phenomenonTime":1005,"result":4}
"#;
        let (mut out, mut rejects) = (Vec::new(), Vec::new());
        let summary = run(&mut joiner(), &input[..], &mut out, &mut rejects, false, |_| {}).unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0]["quantity"], "vaPower_C11");
        assert_eq!(lines[0]["result"], 6.0);
        assert_eq!(lines[0]["phenomenonTime"], 1001.5);
        assert_eq!(lines[0]["left"]["phenomenonTime"], 1000);
        assert_eq!(lines[0]["right"]["quantity"], "vaTorque_C11");
        assert_eq!(lines[1]["left"]["phenomenonTime"], 1005, "C11 torque at 1003 with speed 1005 (its next)");
        let rejects = String::from_utf8(rejects).unwrap();
        assert!(rejects.contains("line 4: late for rule power"), "{rejects}");
        assert!(rejects.contains("line 5: unreadable"), "{rejects}");
        assert_eq!(summary, Summary { lines: 6, joined: 2, late: 1, unreadable: 1, ..Default::default() });
    }
}
