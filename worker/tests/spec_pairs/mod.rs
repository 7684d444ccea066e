//! The join spec's pair set, computed the slow and obvious way, for tests
//! that check the join's output against it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// (thing, left quantity, left time, left result bits, right quantity,
/// right time, right result bits): records of equal time on one side are
/// told apart by their results.
pub type Pair = (String, String, i64, u64, String, i64, u64);

/// The pair a joined record (JSON) stands for.
pub fn pair_of(joined: &Value) -> Pair {
    let (l, r) = (&joined["left"], &joined["right"]);
    (
        joined["thing"].as_str().unwrap().to_string(),
        l["quantity"].as_str().unwrap().to_string(),
        l["phenomenonTime"].as_i64().unwrap(),
        l["result"].as_f64().unwrap().to_bits(),
        r["quantity"].as_str().unwrap().to_string(),
        r["phenomenonTime"].as_i64().unwrap(),
        r["result"].as_f64().unwrap().to_bits(),
    )
}

/// The documented default `stateHorizon` (one hour), in milliseconds.
#[allow(dead_code)]
pub const DEFAULT_HORIZON_MS: i64 = 3_600_000;

/// Pairs of the spec for one key: (thing, left quantity, left time, right quantity, right time).
/// `horizon` (in the records' time unit) is the rule's `stateHorizon`, with
/// no `maxDelta`: no pair spans more than it, and a record that some record
/// of its key passes by more than twice the horizon (horizon + pair limit)
/// expires, bringing its `prev` pair without its `next` (the spec's "Bounded
/// state" for input in time order).
pub fn brute_force(records: &[Value], left: &regex::Regex, right: &regex::Regex, complete: bool, horizon: Option<i64>) -> BTreeSet<Pair> {
    // key -> (left series, right series), each (time, quantity, result bits) in arrival order
    type Series = Vec<(i64, String, u64)>;
    let mut keys: BTreeMap<(String, String), (Series, Series)> = BTreeMap::new();
    for r in records {
        let (thing, q, t) = (r["thing"].as_str().unwrap(), r["quantity"].as_str().unwrap(), r["phenomenonTime"].as_i64().unwrap());
        let bits = r["result"].as_f64().unwrap().to_bits();
        if let Some(c) = left.captures(q) {
            keys.entry((thing.into(), c[1].to_string())).or_default().0.push((t, q.into(), bits));
        }
        if let Some(c) = right.captures(q) {
            keys.entry((thing.into(), c[1].to_string())).or_default().1.push((t, q.into(), bits));
        }
    }
    let mut pairs = BTreeSet::new();
    for ((thing, _), (l, r)) in &keys {
        let stream_end = l.iter().chain(r).map(|x| x.0).max().unwrap_or(i64::MIN);
        for (x_is_left, xs, ys) in [(true, l, r), (false, r, l)] {
            for x in xs {
                let next = ys.iter().find(|y| y.0 >= x.0);
                let prev = ys.iter().rev().find(|y| y.0 < x.0);
                let expired = horizon.is_some_and(|h| stream_end > x.0 + 2 * h);
                let mut add = |y: &(i64, String, u64)| {
                    if horizon.is_some_and(|h| (x.0 - y.0).abs() > h) {
                        return;
                    }
                    let (a, b) = if x_is_left { (x, y) } else { (y, x) };
                    pairs.insert((thing.clone(), a.1.clone(), a.0, a.2, b.1.clone(), b.0, b.2));
                };
                if let Some(n) = next {
                    add(n);
                }
                if let Some(p) = prev {
                    if next.is_some() || complete || expired {
                        add(p);
                    }
                }
            }
        }
    }
    pairs
}

