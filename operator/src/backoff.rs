//! Per-pipeline backoff after failed reconciles: one broken pipeline is
//! retried less and less often, the others are not slowed by it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const FIRST: Duration = Duration::from_secs(5);
const MOST: Duration = Duration::from_secs(300);

/// Consecutive failures per pipeline (`namespace/name`).
#[derive(Default)]
pub struct ErrorBackoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl ErrorBackoff {
    /// Counts a failure and says how long to wait before the next try.
    pub fn failed(&self, pipeline: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(pipeline.to_string()).or_default();
        *n = n.saturating_add(1);
        delay(*n)
    }

    /// A success starts the count again.
    pub fn succeeded(&self, pipeline: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(pipeline);
    }
}

/// 5 s after the first failure, doubling, at most 5 minutes.
pub fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST * 2u32.pow(doublings)).min(MOST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=8).map(|n| delay(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(delay(u32::MAX), MOST);
    }

    #[test]
    fn each_pipeline_counts_alone_and_success_resets() {
        let b = ErrorBackoff::default();
        assert_eq!(b.failed("ns/a"), Duration::from_secs(5));
        assert_eq!(b.failed("ns/a"), Duration::from_secs(10));
        assert_eq!(b.failed("ns/b"), Duration::from_secs(5));
        b.succeeded("ns/a");
        assert_eq!(b.failed("ns/a"), Duration::from_secs(5));
    }
}
