//! A join rule, compiled once from its configuration: the two selectors,
//! the key they share, the output name, the time policy and the expression.

use std::time::Duration;

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::{PairingOptions, Time};
use crate::expr::{Expr, ExprError};

/// What the CRD schema lets through as a duration (humantime's grammar:
/// `500ms`, `1h 30m`), so the API server refuses `soon` at `kubectl apply`.
/// A number too large for a duration still passes and is refused later.
pub const DURATION_PATTERN: &str =
    r"^\s*([0-9]+\s*(nsec|ns|usec|us|µs|msec|ms|seconds|second|sec|s|minutes|minute|min|m|hours|hour|hr|h|days|day|d|weeks|week|w|months|month|M|years|year|y)\s*)+$";

/// `stateHorizon` when a rule names none: a machine quiet for longer (a
/// dead sensor, a weekend) costs at most an hour of its other side's records,
/// and no pair spans more than an hour.
pub const DEFAULT_STATE_HORIZON: Duration = Duration::from_secs(3600);

/// Which of two paired records' times the joined record carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TimePolicy {
    /// The mean of both times.
    #[default]
    Mean,
    /// The earlier of both times.
    Earlier,
    /// The later of both times.
    Later,
}

/// A join rule: pairs each record of the left quantity with its neighbours in
/// the right quantity (see the join spec) and derives a new quantity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinRuleConfig {
    /// Name of the rule, unique in the pipeline.
    pub name: String,
    /// Left quantity: an exact name or a regular expression over the whole
    /// quantity name. Capture groups shared with `right` join like with like.
    pub left: String,
    /// Right quantity, as `left`.
    pub right: String,
    /// Name of the derived quantity; may use capture groups (`vaPower_$1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Arithmetic over `left` and `right`, e.g. `2*pi/60*left*right`.
    /// Default: `left*right`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// Time of the joined record.
    #[serde(default)]
    pub time: TimePolicy,
    /// Pairs further apart than this are dropped (e.g. `500ms`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    #[schemars(with = "Option<String>", regex(pattern = DURATION_PATTERN))]
    pub max_delta: Option<Duration>,
    /// Emit a pair of the second kind anyway when its certainty has not
    /// come within this time. Determinism then holds only for data less late.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    #[schemars(with = "Option<String>", regex(pattern = DURATION_PATTERN))]
    pub max_latency: Option<Duration>,
    /// Records up to this much older than their side's newest are still put
    /// in order rather than reported late.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    #[schemars(with = "Option<String>", regex(pattern = DURATION_PATTERN))]
    pub reorder_window: Option<Duration>,
    /// How far behind its key's newest record (either side) a record is
    /// still held or accepted; also the longest a pair may span. Bounds the
    /// state of a machine whose other side is quiet. Older records expire
    /// (with their earlier pair); older arrivals are dead-lettered as
    /// `beyond_horizon`. Default: 1h.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    #[schemars(with = "Option<String>", regex(pattern = DURATION_PATTERN))]
    pub state_horizon: Option<Duration>,
}


/// Picks the quantities of one side: an exact name, or a regular expression
/// matched against the whole name whose capture groups become part of the
/// join key.
#[derive(Clone, Debug)]
pub enum Selector {
    Exact(String),
    Pattern(Regex),
}

impl Selector {
    /// A plain name (nothing a regular expression would treat specially) is
    /// exact; anything else is a pattern over the whole quantity name.
    pub fn parse(text: &str) -> Result<Self, regex::Error> {
        if regex::escape(text) == text {
            Ok(Selector::Exact(text.to_string()))
        } else {
            Regex::new(&format!("^(?:{text})$")).map(Selector::Pattern)
        }
    }

    pub fn groups(&self) -> usize {
        match self {
            Selector::Exact(_) => 0,
            Selector::Pattern(r) => r.captures_len() - 1,
        }
    }

    /// The capture groups when `quantity` is selected.
    pub fn select(&self, quantity: &str) -> Option<Vec<String>> {
        match self {
            Selector::Exact(name) => (name == quantity).then(Vec::new),
            Selector::Pattern(r) => r.captures(quantity).map(|c| {
                c.iter().skip(1).map(|m| m.map(|m| m.as_str().to_string()).unwrap_or_default()).collect()
            }),
        }
    }
}

/// A rule that cannot be loaded, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("joins[{index}] ({name}).{field}: {message}")]
    Field { index: usize, name: String, field: &'static str, message: String },
    #[error("joins[{index}] ({name}).expression: {source}")]
    Expression { index: usize, name: String, source: ExprError },
}

/// A compiled rule.
#[derive(Clone, Debug)]
pub struct JoinRule {
    pub name: String,
    pub left: Selector,
    pub right: Selector,
    output: Vec<OutputPart>,
    pub expression: Expr,
    pub time: TimePolicy,
    pub pairing: PairingOptions,
}

#[derive(Clone, Debug)]
enum OutputPart {
    Text(String),
    Group(usize),
}

fn nanos(d: Duration) -> Time {
    d.as_nanos().min(Time::MAX as u128) as Time
}

impl JoinRule {
    /// Compiles `config`, the `index`-th rule of a pipeline.
    pub fn compile(index: usize, config: &JoinRuleConfig) -> Result<Self, RuleError> {
        let field = |field: &'static str, message: String| RuleError::Field { index, name: config.name.clone(), field, message };
        let left = Selector::parse(&config.left).map_err(|e| field("left", e.to_string()))?;
        let right = Selector::parse(&config.right).map_err(|e| field("right", e.to_string()))?;
        if left.groups() != right.groups() {
            return Err(field(
                "right",
                format!(
                    "captures {} group(s) but left captures {}: both sides must capture the same parts of the key",
                    right.groups(),
                    left.groups()
                ),
            ));
        }
        let template = match &config.output {
            Some(o) => o.clone(),
            None if left.groups() == 0 => config.name.clone(),
            None => format!("{}_{}", config.name, (1..=left.groups()).map(|g| format!("${g}")).collect::<Vec<_>>().join("_")),
        };
        let output = parse_template(&template, left.groups()).map_err(|m| field("output", m))?;
        if config.state_horizon.is_some_and(|h| h.is_zero()) {
            return Err(field("stateHorizon", "must be longer than 0 (it is how long a record may wait for its partner)".into()));
        }
        let expression = Expr::parse(config.expression.as_deref().unwrap_or("left*right"))
            .map_err(|source| RuleError::Expression { index, name: config.name.clone(), source })?;
        Ok(Self {
            name: config.name.clone(),
            left,
            right,
            output,
            expression,
            time: config.time,
            pairing: PairingOptions {
                max_delta: config.max_delta.map(nanos),
                max_latency: config.max_latency.map(nanos),
                reorder_window: config.reorder_window.map(nanos),
                horizon: Some(nanos(config.state_horizon.unwrap_or(DEFAULT_STATE_HORIZON))),
            },
        })
    }

    /// The output quantity name for a key's capture groups.
    pub fn output_name(&self, groups: &[String]) -> String {
        let mut out = String::new();
        for part in &self.output {
            match part {
                OutputPart::Text(t) => out.push_str(t),
                OutputPart::Group(g) => out.push_str(groups.get(g - 1).map(String::as_str).unwrap_or("")),
            }
        }
        out
    }

    /// The joined record's time from its partners' times.
    pub fn pair_time(&self, left: Time, right: Time) -> Time {
        match self.time {
            TimePolicy::Mean => ((left as i128 + right as i128) / 2) as Time,
            TimePolicy::Earlier => left.min(right),
            TimePolicy::Later => left.max(right),
        }
    }
}

/// `vaPower_$1` -> text and group references; `$$` is a literal `$`.
fn parse_template(template: &str, groups: usize) -> Result<Vec<OutputPart>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            text.push(c);
            continue;
        }
        if chars.peek() == Some(&'$') {
            chars.next();
            text.push('$');
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        let group: usize = digits.parse().map_err(|_| format!("{template:?}: `$` must be followed by a group number (or `$$` for a dollar)"))?;
        if group == 0 || group > groups {
            return Err(format!("{template:?} uses ${group}, but the selectors capture {groups} group(s)"));
        }
        if !text.is_empty() {
            parts.push(OutputPart::Text(std::mem::take(&mut text)));
        }
        parts.push(OutputPart::Group(group));
    }
    if !text.is_empty() {
        parts.push(OutputPart::Text(text));
    }
    if parts.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(left: &str, right: &str) -> JoinRuleConfig {
        JoinRuleConfig {
            name: "power".into(),
            left: left.into(),
            right: right.into(),
            output: Some("vaPower_$1".into()),
            expression: Some("2*pi/60*left*right".into()),
            time: TimePolicy::Mean,
            max_delta: None,
            max_latency: None,
            reorder_window: None,
            state_horizon: None,
        }
    }

    #[test]
    fn capture_groups_name_the_output() {
        let rule = JoinRule::compile(0, &config(r"actSpeed_(C\d+)", r"vaTorque_(C\d+)")).unwrap();
        let groups = rule.left.select("actSpeed_C11").unwrap();
        assert_eq!(groups, vec!["C11"]);
        assert_eq!(rule.output_name(&groups), "vaPower_C11");
        assert!(rule.left.select("actSpeed_C11x").is_none(), "patterns match whole names");
        assert!(rule.left.select("vaTorque_C11").is_none());
    }

    #[test]
    fn plain_names_are_exact() {
        let mut c = config("actSpeed_C11", "vaTorque_C11");
        c.output = Some("power".into());
        let rule = JoinRule::compile(0, &c).unwrap();
        assert!(matches!(rule.left, Selector::Exact(_)));
        assert_eq!(rule.output_name(&[]), "power");
    }

    #[test]
    fn mismatched_groups_and_bad_templates_name_the_field() {
        let e = JoinRule::compile(3, &config(r"a_(\d+)", "b")).unwrap_err().to_string();
        assert!(e.starts_with("joins[3] (power).right: captures 0 group(s) but left captures 1"), "{e}");
        let mut c = config(r"a_(\d+)", r"b_(\d+)");
        c.output = Some("p_$2".into());
        let e = JoinRule::compile(0, &c).unwrap_err().to_string();
        assert!(e.contains("uses $2, but the selectors capture 1"), "{e}");
        let mut c = config("a", "b");
        c.output = None;
        c.expression = Some("left*".into());
        let e = JoinRule::compile(0, &c).unwrap_err().to_string();
        assert!(e.starts_with("joins[0] (power).expression: expected a number"), "{e}");
    }

    #[test]
    fn time_policies() {
        let mut c = config("a", "b");
        c.output = None;
        for (policy, want) in [(TimePolicy::Mean, 15), (TimePolicy::Earlier, 10), (TimePolicy::Later, 20)] {
            c.time = policy;
            assert_eq!(JoinRule::compile(0, &c).unwrap().pair_time(10, 20), want);
        }
    }

    #[test]
    fn the_state_horizon_defaults_to_an_hour_and_must_be_positive() {
        let mut c = config("a", "b");
        c.output = None;
        assert_eq!(JoinRule::compile(0, &c).unwrap().pairing.horizon, Some(3_600_000_000_000));
        c.state_horizon = Some(Duration::from_secs(90));
        assert_eq!(JoinRule::compile(0, &c).unwrap().pairing.horizon, Some(90_000_000_000));
        c.state_horizon = Some(Duration::ZERO);
        let e = JoinRule::compile(2, &c).unwrap_err().to_string();
        assert!(e.starts_with("joins[2] (power).stateHorizon: must be longer than 0"), "{e}");
    }
}
