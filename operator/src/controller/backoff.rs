//! Per-cluster exponential backoff with jitter for failed reconciliations: a
//! failing cluster is retried quickly at first and then less and less often, and the
//! jitter keeps many clusters failing together (an API server outage) from retrying
//! in lockstep.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// First retry delay after a failure.
pub const BASE_DELAY: Duration = Duration::from_secs(2);
/// Longest retry delay: the periodic resync interval, beyond which backing off
/// further would only delay recovery.
pub const MAX_DELAY: Duration = Duration::from_secs(300);

/// Consecutive failures per cluster (namespace/name).
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// The delay before retrying `key` after one more failure: a uniformly random
    /// point in the upper half of `BASE_DELAY * 2^failures`, capped at `MAX_DELAY`.
    pub fn next_delay(&self, key: &str) -> Duration {
        let failures = {
            let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let count = map.entry(key.to_owned()).or_insert(0);
            *count = count.saturating_add(1);
            *count
        };
        let ceiling = BASE_DELAY
            .saturating_mul(1u32 << (failures - 1).min(16))
            .min(MAX_DELAY);
        let floor = ceiling / 2;
        floor + ceiling.mul_f64(rand::random_range(0.0..=0.5))
    }

    /// Forgets the failures of `key` after a successful reconciliation.
    pub fn reset(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_bounds_and_stop_at_the_cap() {
        let backoff = Backoff::default();
        for attempt in 0..12u32 {
            let ceiling = BASE_DELAY.saturating_mul(1 << attempt).min(MAX_DELAY);
            let delay = backoff.next_delay("apps/demo");
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "attempt {attempt}: {delay:?} not in [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
    }

    #[test]
    fn jitter_spreads_retries_of_clusters_that_failed_together() {
        let backoff = Backoff::default();
        let delays: std::collections::HashSet<Duration> = (0..20)
            .map(|i| {
                let key = format!("apps/c{i}");
                (0..5)
                    .map(|_| backoff.next_delay(&key))
                    .last()
                    .unwrap_or_default()
            })
            .collect();
        assert!(delays.len() > 10, "retries not spread: {delays:?}");
    }

    #[test]
    fn success_starts_the_backoff_over() {
        let backoff = Backoff::default();
        for _ in 0..6 {
            backoff.next_delay("apps/demo");
        }
        backoff.reset("apps/demo");
        assert!(backoff.next_delay("apps/demo") <= BASE_DELAY);
    }
}
