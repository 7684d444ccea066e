//! `millrace-worker join-file` on the prototype's machine data (the shared
//! test file, split into narrow records in time order:
//! `examples/narrow-events.jsonl`), checked pair by pair against a
//! brute-force reading of the join spec.

mod spec_pairs;

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;
use spec_pairs::{brute_force, pair_of, Pair, DEFAULT_HORIZON_MS};

const NARROW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/narrow-events.jsonl");

fn join_file(extra: &[&str]) -> (Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_millrace-worker"))
        .args(["join-file", NARROW, "--left", r"actSpeed_(C\d+)", "--right", r"vaTorque_(C\d+)"])
        .args(["--output", "vaPower_$1", "--expression", "2*pi/60*left*right"])
        .args(extra)
        .output()
        .expect("cannot run millrace-worker");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (lines, String::from_utf8(out.stderr).unwrap())
}

/// `horizon`: the `--state-horizon` given (None: the default) and the same in ms.
fn check(complete: bool, horizon: Option<(&str, i64)>) {
    let records: Vec<Value> =
        std::fs::read_to_string(NARROW).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let horizon_ms = horizon.map_or(DEFAULT_HORIZON_MS, |h| h.1);
    let want = brute_force(&records, &regex::Regex::new(r"^actSpeed_(C\d+)$").unwrap(), &regex::Regex::new(r"^vaTorque_(C\d+)$").unwrap(), complete, Some(horizon_ms));
    let mut args = Vec::new();
    if complete {
        args.push("--complete");
    }
    if let Some((h, _)) = horizon {
        args.extend(["--state-horizon", h]);
    }
    let (joined, rejects) = join_file(&args);
    assert!(rejects.is_empty(), "nothing in this file is late or unreadable: {rejects}");
    let got: Vec<Pair> = joined.iter().map(pair_of).collect();
    let set: BTreeSet<Pair> = got.iter().cloned().collect();
    assert_eq!(set.len(), got.len(), "no pair twice");
    assert_eq!(set.len(), want.len(), "pair count");
    assert_eq!(set, want);
    for j in &joined {
        let (l, r) = (j["left"]["result"].as_f64().unwrap(), j["right"]["result"].as_f64().unwrap());
        let expected = 2.0 * std::f64::consts::PI / 60.0 * l * r;
        assert!((j["result"].as_f64().unwrap() - expected).abs() <= 1e-9 * expected.abs().max(1.0));
        assert_eq!(j["quantity"], "vaPower_C11");
    }
}

#[test]
fn the_machine_data_joins_to_exactly_the_spec_pairs() {
    check(false, None);
}

#[test]
fn with_complete_the_waiting_pairs_come_too() {
    check(true, None);
}

/// The recorded machine has quiet stretches far longer than these horizons:
/// each gives a different pair set, and each is the spec's.
#[test]
fn each_state_horizon_gives_the_spec_pairs_of_that_horizon() {
    check(false, Some(("10s", 10_000)));
    check(true, Some(("2m", 120_000)));
    check(false, Some(("100days", 8_640_000_000)));
}

#[test]
fn bad_rules_are_reported_with_the_spot() {
    let out = Command::new(env!("CARGO_BIN_EXE_millrace-worker"))
        .args(["join-file", NARROW, "--left", "a", "--right", "b", "--expression", "2*pi/60*(left*right"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected `)` at column 20"), "{err}");
}

/// With the rejects in a file, standard error says what was done, in
/// numbers that match the input and the output.
#[test]
fn the_summary_counts_what_was_read_and_joined() {
    let dir = tempfile::tempdir().unwrap();
    let rejects = dir.path().join("rejects.jsonl");
    let (joined, err) = join_file(&["--rejects", rejects.to_str().unwrap()]);
    let records = std::fs::read_to_string(NARROW).unwrap().lines().count();
    let summary = err.lines().last().unwrap_or_default();
    let (head, counts) = summary.split_once("): ").unwrap_or_else(|| panic!("no summary: {err}"));
    assert!(head.starts_with(&format!("{records} records in ")) && head.contains(" s (") && head.ends_with(" records/s"), "{summary}");
    let (counts, expiry) = counts.split_once("; ").unwrap_or_else(|| panic!("no expiry counts: {summary}"));
    assert_eq!(counts, format!("{} joined, 0 late, 0 beyond the horizon, 0 unreadable, 0 not a number", joined.len()), "{summary}");
    let numbers: Vec<u64> = expiry.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
    assert_eq!(expiry, format!("{} held records expired ({} pairs emitted on expiry)", numbers[0], numbers[1]), "{summary}");
}
