//! millrace-join: the deterministic time-series join of `docs/join-spec.md`,
//! pure: narrow records and their timestamps in, joined records out, with no
//! I/O, no async runtime and no Kafka, so that it can be tested, benchmarked
//! and fuzzed on its own.
//!
//! - [`record`]: the narrow record and the timestamps it carries;
//! - [`expr`]: the arithmetic a rule derives its output with;
//! - [`rule`]: a rule as configured ([`rule::JoinRuleConfig`]) and compiled;
//! - [`engine`]: the pairing state machine of one rule;
//! - [`joiner`]: all rules of a pipeline over one stream of records.
//!
//! The worker runs it over a file (`join-file`) and on Kafka (the join stage).

pub mod record;
pub mod expr;
pub mod rule;
pub mod engine;
pub mod joiner;
