//! The desired objects of a pipeline, built from its spec alone: no I/O
//! here, so that every field can be checked by plain unit tests.

pub mod workers;
pub mod mosquitto;
pub mod grafana;
