//! All join rules of a pipeline over a stream of narrow records: routes
//! each record to the rules and keys it feeds (the selectors run once per
//! distinct quantity, not per record), runs the pairing, and hands out
//! joined records, late records and results that are not numbers.

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::engine::{Late, LateWhy, Pairing, Side, Time};
use crate::rule::{JoinRule, JoinRuleConfig, RuleError};
use crate::record::{format_time_like, TimeValue};

type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// A narrow record as the join reads it. `time_raw` is the JSON text of
/// its `phenomenonTime`, passed through to the output unchanged.
pub struct Input<'a> {
    pub thing: &'a str,
    pub quantity: &'a str,
    pub time: Time,
    pub time_raw: &'a RawValue,
    pub result: f64,
    /// Position in the input (a Kafka offset, a line number).
    pub seq: u64,
}

/// A quantity name with its JSON form, escaped once when first seen.
pub struct QuantityName {
    name: Box<str>,
    json: Box<str>,
}

impl QuantityName {
    fn new(name: &str) -> Self {
        Self { name: name.into(), json: serde_json::to_string(name).expect("a string always serializes").into() }
    }
}

/// What one side of a pair was, as read.
pub struct Partner {
    quantity: Arc<QuantityName>,
    time_raw: Box<RawValue>,
    result: f64,
}

impl Partner {
    pub fn quantity(&self) -> &str {
        &self.quantity.name
    }
    /// The time exactly as read (JSON text).
    pub fn time_raw(&self) -> &RawValue {
        &self.time_raw
    }
    pub fn result(&self) -> f64 {
        self.result
    }
}

impl Partner {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        write_reading(out, &self.quantity, &self.time_raw, self.result);
        out.push(b'}');
    }
}

/// `"quantity":..,"phenomenonTime":..,"result":..`: a record's reading,
/// its time as read.
fn write_reading(out: &mut Vec<u8>, quantity: &QuantityName, time_raw: &RawValue, result: f64) {
    out.extend_from_slice(b"\"quantity\":");
    out.extend_from_slice(quantity.json.as_bytes());
    out.extend_from_slice(b",\"phenomenonTime\":");
    out.extend_from_slice(time_raw.get().as_bytes());
    out.extend_from_slice(b",\"result\":");
    write_f64(out, result);
}

fn write_f64(out: &mut Vec<u8>, v: f64) {
    serde_json::to_writer(&mut *out, &v).expect("writing to a Vec cannot fail");
}

/// A joined record, borrowed for the duration of the callback.
pub struct Joined<'a> {
    pub rule: &'a str,
    pub thing: &'a str,
    pub quantity: &'a str,
    /// `{"thing":...,"quantity":...,"phenomenonTime":`, escaped once per key.
    json_prefix: &'a str,
    /// Epoch nanoseconds, per the rule's time policy.
    pub time: Time,
    /// `time` written like the left partner's time (same unit or format).
    pub time_value: TimeValue,
    pub result: f64,
    pub left: &'a Partner,
    pub right: &'a Partner,
    /// Seq of the arrival that made the pair certain.
    pub trigger: u64,
    /// Emitted by `maxLatency` before it was certain.
    pub early: bool,
    /// Emitted when its record expired beyond the horizon.
    pub expired: bool,
}

impl Joined<'_> {
    /// Appends the joined record as one JSON object (no newline):
    /// `{"thing","quantity","phenomenonTime","result","left":{..},"right":{..}}`.
    /// Written by hand because it is the hot path of the join: names are
    /// escaped once per key and quantity, partner times copied as read.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.json_prefix.as_bytes());
        serde_json::to_writer(&mut *out, &self.time_value).expect("writing to a Vec cannot fail");
        out.extend_from_slice(b",\"result\":");
        write_f64(out, self.result);
        out.extend_from_slice(b",\"left\":");
        self.left.write_json(out);
        out.extend_from_slice(b",\"right\":");
        self.right.write_json(out);
        out.push(b'}');
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write_json(&mut out);
        out
    }
}

/// A record the join holds, as [`Joiner::held_before`] hands it out.
pub struct HeldRecord {
    thing: Arc<str>,
    quantity: Arc<QuantityName>,
    time_raw: Box<RawValue>,
    result: f64,
    /// The rules holding it.
    pub rules: Vec<String>,
}

impl HeldRecord {
    /// `{"thing","quantity","phenomenonTime","result","rules":[..]}`: the
    /// narrow record as read, and the rules to give it back to.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(b"{\"thing\":");
        serde_json::to_writer(&mut out, &*self.thing).expect("writing to a Vec cannot fail");
        out.push(b',');
        write_reading(&mut out, &self.quantity, &self.time_raw, self.result);
        out.extend_from_slice(b",\"rules\":");
        serde_json::to_writer(&mut out, &self.rules).expect("writing to a Vec cannot fail");
        out.push(b'}');
        out
    }
}

/// What the join reports besides joined records.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejected {
    /// Older than the newest accepted record of its side and key, or
    /// beyond the rule's horizon (`late.why` says which).
    Late { rule: String, late: Late },
    /// The expression gave NaN or infinity for a pair.
    NotANumber { rule: String, left: f64, right: f64 },
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Late { rule, late } => match late.why {
                LateWhy::OwnSide => write!(
                    f,
                    "late for rule {rule}: time {} is older than its side's newest accepted record ({}), {} ns behind",
                    late.time,
                    late.newest,
                    late.newest - late.time
                ),
                LateWhy::BeyondHorizon { horizon } => write!(
                    f,
                    "beyond the horizon of rule {rule}: time {} is {} ns behind its key's newest record ({}), more than the stateHorizon of {} ns",
                    late.time,
                    late.newest - late.time,
                    late.newest,
                    horizon
                ),
            },
            Rejected::NotANumber { rule, left, right } => {
                write!(f, "rule {rule}: the expression is not a finite number for left={left}, right={right}")
            }
        }
    }
}

/// Everything a join emits, in order.
pub enum Event<'a> {
    Joined(Joined<'a>),
    Rejected(Rejected),
}

#[derive(Clone, Copy)]
struct Route {
    rule: u32,
    side: Side,
    /// Interned capture groups, per rule.
    groups: u32,
}

struct KeyInfo {
    thing: Arc<str>,
    output: String,
    json_prefix: String,
}

struct RuleState {
    rule: JoinRule,
    pairing: Pairing<Partner>,
    keys: HashMap<(u32, u32), u32>,
    key_info: Vec<KeyInfo>,
    groups: Vec<Vec<String>>,
}

/// Counters a stage exports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JoinCounts {
    pub records: u64,
    pub joined: u64,
    pub late: u64,
    /// Arrived older than its key's stream time minus the horizon.
    pub beyond_horizon: u64,
    pub early: u64,
    /// Pairs emitted when their record expired (the horizon).
    pub expired_pairs: u64,
    pub not_a_number: u64,
}

/// A quantity's parsed name and the rules it feeds.
type QuantityEntry = (Arc<QuantityName>, Arc<[Route]>);

/// The join of a whole pipeline.
pub struct Joiner {
    rules: Vec<RuleState>,
    things: HashMap<Box<str>, (u32, Arc<str>)>,
    quantities: HashMap<Box<str>, QuantityEntry>,
    pub counts: JoinCounts,
}

impl Joiner {
    pub fn new(configs: &[JoinRuleConfig]) -> Result<Self, RuleError> {
        let rules = configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let rule = JoinRule::compile(i, c)?;
                Ok(RuleState {
                    pairing: Pairing::new(rule.pairing),
                    rule,
                    keys: HashMap::default(),
                    key_info: Vec::new(),
                    groups: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>, RuleError>>()?;
        Ok(Self { rules, things: HashMap::default(), quantities: HashMap::default(), counts: JoinCounts::default() })
    }

    fn routes(&mut self, quantity: &str) -> (Arc<QuantityName>, Arc<[Route]>) {
        if let Some((q, r)) = self.quantities.get(quantity) {
            return (q.clone(), r.clone());
        }
        let mut routes = Vec::new();
        for (i, state) in self.rules.iter_mut().enumerate() {
            for (side, selector) in [(Side::Left, &state.rule.left), (Side::Right, &state.rule.right)] {
                if let Some(groups) = selector.select(quantity) {
                    let id = match state.groups.iter().position(|g| *g == groups) {
                        Some(id) => id,
                        None => {
                            state.groups.push(groups);
                            state.groups.len() - 1
                        }
                    };
                    routes.push(Route { rule: i as u32, side, groups: id as u32 });
                }
            }
        }
        let entry = (Arc::new(QuantityName::new(quantity)), Arc::<[Route]>::from(routes));
        self.quantities.insert(quantity.into(), entry.clone());
        entry
    }

    fn thing(&mut self, thing: &str) -> (u32, Arc<str>) {
        if let Some(t) = self.things.get(thing) {
            return t.clone();
        }
        let entry = (self.things.len() as u32, Arc::<str>::from(thing));
        self.things.insert(thing.into(), entry.clone());
        entry
    }

    /// Feeds one record; `out` receives what it made certain.
    pub fn push(&mut self, input: &Input<'_>, out: &mut impl FnMut(Event<'_>)) {
        self.push_to(input, |_| true, out);
    }

    /// Feeds a record restored from a copy of the state ([`Joiner::held_before`])
    /// to the rules that held it, by name, and to no other.
    pub fn restore(&mut self, input: &Input<'_>, rules: &[String], out: &mut impl FnMut(Event<'_>)) {
        self.push_to(input, |rule| rules.iter().any(|r| r == rule), out);
    }

    fn push_to(&mut self, input: &Input<'_>, wanted: impl Fn(&str) -> bool, out: &mut impl FnMut(Event<'_>)) {
        self.counts.records += 1;
        let (quantity, routes) = self.routes(input.quantity);
        if routes.is_empty() {
            return;
        }
        let (thing_id, thing) = self.thing(input.thing);
        for route in routes.iter() {
            let state = &mut self.rules[route.rule as usize];
            if !wanted(&state.rule.name) {
                continue;
            }
            let next_key = state.key_info.len() as u32;
            let key = *state.keys.entry((thing_id, route.groups)).or_insert(next_key);
            if key == next_key {
                let output = state.rule.output_name(&state.groups[route.groups as usize]);
                let json_prefix = format!(
                    "{{\"thing\":{},\"quantity\":{},\"phenomenonTime\":",
                    serde_json::to_string(&*thing).expect("a string always serializes"),
                    serde_json::to_string(&output).expect("a string always serializes")
                );
                state.key_info.push(KeyInfo { thing: thing.clone(), output, json_prefix });
            }
            let partner = Partner { quantity: quantity.clone(), time_raw: input.time_raw.to_owned(), result: input.result };
            let (rule, info, counts) = (&state.rule, &state.key_info[key as usize], &mut self.counts);
            let result = state.pairing.push(key as usize, route.side, input.time, input.seq, partner, &mut |p| {
                emit(rule, info, p, counts, out);
            });
            if let Err(late) = result {
                match late.why {
                    LateWhy::OwnSide => self.counts.late += 1,
                    LateWhy::BeyondHorizon { .. } => self.counts.beyond_horizon += 1,
                }
                out(Event::Rejected(Rejected::Late { rule: state.rule.name.clone(), late }));
            }
        }
    }

    /// End of an input that holds the whole series: pairs still waiting for
    /// a `next` are emitted with their `prev`.
    pub fn complete(&mut self, seq: u64, out: &mut impl FnMut(Event<'_>)) {
        for state in &mut self.rules {
            let (rule, infos, counts) = (&state.rule, &state.key_info, &mut self.counts);
            state.pairing.complete(seq, &mut |key, p| emit(rule, &infos[key], p, counts, out));
        }
    }

    /// The records held that arrived before `seq`, each once (by seq) with
    /// the names of the rules holding it: what a replay that starts at `seq`
    /// must be given back first.
    pub fn held_before(&self, seq: u64) -> std::collections::BTreeMap<u64, HeldRecord> {
        let mut held: std::collections::BTreeMap<u64, HeldRecord> = std::collections::BTreeMap::new();
        for state in &self.rules {
            for (key, s, partner) in state.pairing.held_before(seq) {
                let record = held.entry(s).or_insert_with(|| HeldRecord {
                    thing: state.key_info[key].thing.clone(),
                    quantity: partner.quantity.clone(),
                    time_raw: partner.time_raw.clone(),
                    result: partner.result,
                    rules: Vec::new(),
                });
                if !record.rules.contains(&state.rule.name) {
                    record.rules.push(state.rule.name.clone());
                }
            }
        }
        held
    }

    /// Held records dropped by the rules' horizons, since the start.
    pub fn expired_records(&self) -> u64 {
        self.rules.iter().map(|r| r.pairing.expired_records).sum()
    }

    /// Records held over all rules.
    pub fn retained(&self) -> usize {
        self.rules.iter().map(|r| r.pairing.retained()).sum()
    }

    /// Smallest seq of any record held.
    pub fn min_retained_seq(&self) -> Option<u64> {
        self.rules.iter().filter_map(|r| r.pairing.min_retained_seq()).min()
    }
}

fn emit(rule: &JoinRule, info: &KeyInfo, p: crate::engine::PairRef<'_, Partner>, counts: &mut JoinCounts, out: &mut impl FnMut(Event<'_>)) {
    let result = rule.expression.eval(p.left.result, p.right.result);
    if !result.is_finite() {
        counts.not_a_number += 1;
        out(Event::Rejected(Rejected::NotANumber { rule: rule.name.clone(), left: p.left.result, right: p.right.result }));
        return;
    }
    counts.joined += 1;
    if p.early {
        counts.early += 1;
    }
    if p.expired {
        counts.expired_pairs += 1;
    }
    let time = rule.pair_time(p.left_time, p.right_time);
    out(Event::Joined(Joined {
        rule: &rule.name,
        thing: &info.thing,
        quantity: &info.output,
        json_prefix: &info.json_prefix,
        time,
        time_value: format_time_like(time, p.left.time_raw.get()),
        result,
        left: p.left,
        right: p.right,
        trigger: p.trigger,
        early: p.early,
        expired: p.expired,
    }));
}
