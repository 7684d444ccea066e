//! Real servers for Millrace's tests, each on a free loopback port in its
//! own temporary directory, stopped (and its files removed) when dropped,
//! also when the test panics.
//!
//! ```no_run
//! use millrace_testkit::{require, Mosquitto};
//!
//! fn a_test() {
//!     let mqtt = require!(Mosquitto::start());
//!     assert!(mqtt.url().starts_with("mqtt://127.0.0.1:"));
//! }
//! ```
//!
//! Binaries come from `KUBEBUILDER_ASSETS` (etcd, kube-apiserver), then
//! `$MILLRACE_CACHE/bin` (default `~/.cache/millrace/bin`, filled by
//! `scripts/deps.sh`), then `PATH`. A missing one is a [`StartError::Missing`]:
//! [`require!`] fails the test under `CI=true` and skips it otherwise.

mod binaries;
mod influxdb;
mod kafka;
mod kube_api;
mod mosquitto;
mod process;

pub use binaries::{find_binary, StartError};
pub use influxdb::{InfluxDb, INFLUX_ADMIN};
pub use kafka::{KafkaBroker, KafkaCluster};
pub use kube_api::{KubeApi, RequestLog};
pub use mosquitto::Mosquitto;
pub use process::unique_name;

/// Unwraps a server start. A missing binary fails the test under `CI=true`
/// (naming it) and otherwise skips the test with a message; any other
/// start failure fails the test.
#[macro_export]
macro_rules! require {
    ($start:expr) => {
        match $start {
            Ok(server) => server,
            Err($crate::StartError::Missing { tool, hint }) => {
                if $crate::in_ci() {
                    panic!("required tool {tool} is not installed ({hint}); CI=true does not skip");
                }
                eprintln!("skipped: {tool} not installed ({hint})");
                return Default::default();
            }
            Err(e) => panic!("{e}"),
        }
    };
}

/// True when running under CI (`CI=true`), where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}
