//! millrace-worker: the pipeline's stages: turns wide MQTT machine messages
//! into narrow records, joins them deterministically in time (with the
//! `millrace-join` crate) and exports them to InfluxDB; the configuration
//! it runs from is the `millrace-config` crate.
//!
//! Data flows one way: MQTT bytes -> wide message -> narrow records ->
//! joined records -> points; each step a function of the previous one, with
//! I/O only at the two ends of a stage.

pub mod dead_letter;
pub mod wide;
pub mod line_protocol;
pub mod metrics;
pub mod health;
pub mod credentials;
pub mod influx;
pub mod kafka;
pub mod ingest;
pub mod mqtt_ack;
pub mod mqtt_broker;
pub mod mqtt_session;
pub mod join;
pub mod export;
pub mod embedded;
pub mod simulate;
pub mod tls;
