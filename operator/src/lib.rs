//! Millrace operator: reconciles `StreamPipeline` resources into the worker
//! Deployments, Kafka topics, a Mosquitto broker and Grafana.

pub mod crd;
pub mod backoff;
pub mod build;
pub mod conditions;
pub mod drift;
pub mod reconcile;
pub mod topics;
pub mod metrics;
