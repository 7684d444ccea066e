//! The join where it meets I/O: over a JSONL file (`join-file`) and on
//! Kafka, exactly once (the join stage). The join itself, pure, is the
//! `millrace-join` crate.

pub mod file;
pub mod stage;
pub mod state_topic;
