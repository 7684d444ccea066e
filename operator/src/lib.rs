//! millrace-operator: reconciles `StreamPipeline` resources into the worker
//! StatefulSets, Kafka topics, a Mosquitto broker and Grafana. It builds on
//! `millrace-config` (the pipeline types its CRD embeds) and
//! `millrace-health` (its metrics endpoint), not on the worker.

pub mod crd;
pub mod backoff;
pub mod children;
pub mod conditions;
pub mod defaults;
pub mod drift;
pub mod kafka_auth;
pub mod reconcile;
pub mod rollout;
pub mod validate;
pub mod topics;
pub mod topic_configs;
pub mod metrics;
