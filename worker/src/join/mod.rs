//! The deterministic time-series join (see `docs/join-spec.md`).

pub mod engine;
pub mod expr;
pub mod rule;
pub mod joiner;
pub mod file;
pub mod stage;
