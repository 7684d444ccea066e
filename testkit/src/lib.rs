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
pub mod tls;

pub use binaries::{find_binary, StartError};
pub use influxdb::{InfluxDb, INFLUX_ADMIN};
pub use kafka::{KafkaBroker, KafkaCluster, SecureListeners};
pub use kube_api::{KubeApi, RequestLog};
pub use mosquitto::Mosquitto;
pub use process::{free_port, unique_name};

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
                $crate::record_skip(&tool, &hint);
                return Default::default();
            }
            Err(e) => panic!("{e}"),
        }
    };
}

/// The file where [`require!`] records each test it skips, one line each,
/// so that `scripts/test.sh` counts them in its closing line (cargo itself
/// counts such a test as passed).
pub const SKIPS_FILE_ENV: &str = "MILLRACE_SKIPS";

/// Says that the running test is skipped for want of `tool`: on stderr,
/// and as a line in `$MILLRACE_SKIPS` when that is set.
pub fn record_skip(tool: &str, hint: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    eprintln!("skipped: {test}: {tool} not installed ({hint})");
    if let Some(path) = std::env::var_os(SKIPS_FILE_ENV) {
        use std::io::Write;
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(file, "{test}: {tool} not installed");
        }
    }
}

/// True when running under CI (`CI=true`), where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_skip_is_recorded_with_the_test_and_the_tool() {
        let file = std::env::temp_dir().join(format!("{}.skips", crate::unique_name("skips")));
        // The variable is read per call; set for this process only.
        std::env::set_var(crate::SKIPS_FILE_ENV, &file);
        let recorded = std::thread::Builder::new()
            .name("worker::e2e::some_test".into())
            .spawn(|| crate::record_skip("kafka", "scripts/deps.sh installs it"))
            .unwrap()
            .join();
        std::env::remove_var(crate::SKIPS_FILE_ENV);
        recorded.unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let _ = std::fs::remove_file(&file);
        assert_eq!(text, "worker::e2e::some_test: kafka not installed\n");
    }
}
