//! The operator's Prometheus metrics (prefix `kcache_operator_`): reconciliations by
//! result, their duration, errors by kind, the reconciliations under way, the
//! clusters it manages, and whether this replica is the leader.

use std::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::Error;

/// Reconcile duration buckets in seconds: a reconcile is a handful of API calls,
/// so tens of milliseconds; seconds mean a slow or throttled API server.
const DURATION_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0];

/// The operator's metrics and their registry. Cheap to clone: the instruments are
/// shared handles.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    reconciliations: IntCounterVec,
    duration: Histogram,
    errors: IntCounterVec,
    /// kube-runtime does not expose its queue, so the work under way stands in for it
    /// on the dashboard: a backlog shows as reconciliations that pile up here.
    in_flight: IntGauge,
    managed: IntGauge,
    leader: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("kcache_operator".into()), None)
            .expect("a constant prefix is a valid registry");
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "reconciliations_total",
                "Reconciliations by result: success, blocked (a spec that cannot work) or error.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "reconcile_duration_seconds",
                "Time one reconciliation took.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "reconcile_errors_total",
                "Failed reconciliations by kind of error.",
            ),
            &["error"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new(
            "reconciles_in_flight",
            "Reconciliations started and not yet finished.",
        )
        .expect("valid metric");
        // Every result from the first scrape, so a rate() over them is 0, not empty.
        for result in ["success", "blocked", "error"] {
            reconciliations.with_label_values(&[result]);
        }
        let managed = IntGauge::new("managed_clusters", "CacheClusters this operator manages.")
            .expect("valid metric");
        let leader = IntGauge::new("leader", "1 while this replica holds the leader lease.")
            .expect("valid metric");
        for collector in [
            Box::new(reconciliations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(errors.clone()),
            Box::new(in_flight.clone()),
            Box::new(managed.clone()),
            Box::new(leader.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            reconciliations,
            duration,
            errors,
            in_flight,
            managed,
            leader,
        }
    }

    /// Starts timing a reconciliation; the duration is recorded when the guard drops,
    /// whichever way the reconciliation ends.
    pub fn time_reconcile(&self) -> ReconcileTimer {
        self.in_flight.inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.duration.clone(),
            in_flight: self.in_flight.clone(),
        }
    }

    /// Counts a reconciliation that ended without an error.
    pub fn reconciled(&self, blocked: bool) {
        let result = if blocked { "blocked" } else { "success" };
        self.reconciliations.with_label_values(&[result]).inc();
    }

    /// Counts a failed reconciliation.
    pub fn failed(&self, error: &Error) {
        self.reconciliations.with_label_values(&["error"]).inc();
        self.errors.with_label_values(&[error.metric_label()]).inc();
    }

    pub fn set_managed_clusters(&self, count: usize) {
        self.managed.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Reconciliations so far with the given result, for tests and diagnostics.
    pub fn reconciliations(&self, result: &str) -> u64 {
        self.reconciliations.with_label_values(&[result]).get()
    }

    /// Errors so far with the given label.
    pub fn errors(&self, label: &str) -> u64 {
        self.errors.with_label_values(&[label]).get()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// Records the time from its creation to its drop, and counts the reconciliation
/// as in flight meanwhile.
#[derive(Debug)]
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
    in_flight: IntGauge,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
        self.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_carries_the_operator_prefix() {
        let metrics = Metrics::new();
        metrics.reconciled(false);
        metrics.failed(&Error::LeadershipLost);
        metrics.set_managed_clusters(2);
        drop(metrics.time_reconcile());
        let text = metrics.render();
        for name in [
            "kcache_operator_reconciliations_total{result=\"success\"} 1",
            "kcache_operator_reconciliations_total{result=\"error\"} 1",
            "kcache_operator_reconcile_errors_total{error=\"leadership_lost\"} 1",
            "kcache_operator_reconcile_duration_seconds_count 1",
            "kcache_operator_managed_clusters 2",
            "kcache_operator_leader 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    #[test]
    fn a_reconciliation_is_in_flight_until_its_timer_drops() {
        let metrics = Metrics::new();
        let timer = metrics.time_reconcile();
        assert!(
            metrics
                .render()
                .contains("kcache_operator_reconciles_in_flight 1")
        );
        drop(timer);
        let text = metrics.render();
        assert!(text.contains("kcache_operator_reconciles_in_flight 0"));
        assert!(text.contains(r#"kcache_operator_reconciliations_total{result="blocked"} 0"#));
    }
}
