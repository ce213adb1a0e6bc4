//! Security metrics (prefix `kcache_`): what reloads did, and whom the node turned
//! away. Registered into the node's registry, so /metrics shows them.

use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts};

/// Counters of credential reloads, refused connections and refused calls.
#[derive(Debug, Clone)]
pub struct SecurityMetrics {
    reloads: IntCounterVec,
    outdated: IntGaugeVec,
    handshakes: IntCounterVec,
    unauthenticated: IntCounterVec,
    anonymous: IntCounter,
    not_peers: IntCounter,
}

impl Default for SecurityMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SecurityMetrics {
    pub fn new() -> Self {
        let counter = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric")
        };
        let reloads = IntCounterVec::new(
            Opts::new(
                "credential_reloads_total",
                "Changed credential files read, by credential (tls, token) and result (ok, \
                 error: the previous credentials stay in use).",
            ),
            &["credential", "result"],
        )
        .expect("valid metric");
        let outdated = IntGaugeVec::new(
            Opts::new(
                "credentials_outdated",
                "1 while the credential's files on disk changed but do not load, so the node \
                 still serves the previous ones (which may expire); 0 once they load.",
            ),
            &["credential"],
        )
        .expect("valid metric");
        for credential in ["tls", "token"] {
            for result in ["ok", "error"] {
                reloads.with_label_values(&[credential, result]);
            }
            outdated.with_label_values(&[credential]);
        }
        Self {
            reloads,
            outdated,
            handshakes: counter(
                "tls_handshake_failures_total",
                "Connections to the gRPC port dropped before TLS was up, by reason \
                 (plaintext, handshake, timeout).",
                "reason",
            ),
            unauthenticated: counter(
                "unauthenticated_requests_total",
                "Calls refused with UNAUTHENTICATED, by reason (missing, malformed, rejected).",
                "reason",
            ),
            anonymous: IntCounter::new(
                "anonymous_requests_total",
                "Calls admitted without any token because --auth-accepts-anonymous is on (the \
                 rollouts that turn authentication on or off).",
            )
            .expect("valid metric"),
            not_peers: IntCounter::new(
                "peer_calls_refused_total",
                "Calls to the Peer service refused with PERMISSION_DENIED: the client \
                 certificate is not valid for the name nodes' certificates carry.",
            )
            .expect("valid metric"),
        }
    }

    /// The collectors to register with the node's registry.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.reloads.clone()),
            Box::new(self.outdated.clone()),
            Box::new(self.handshakes.clone()),
            Box::new(self.unauthenticated.clone()),
            Box::new(self.anonymous.clone()),
            Box::new(self.not_peers.clone()),
        ]
    }

    pub fn reloaded(&self, credential: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.with_label_values(&[credential, result]).inc();
        self.outdated
            .with_label_values(&[credential])
            .set(i64::from(!ok));
    }

    /// How many reloads of `credential` ended in `result` ("ok", "error").
    pub fn reloads(&self, credential: &str, result: &str) -> u64 {
        self.reloads.with_label_values(&[credential, result]).get()
    }

    pub fn handshake_failed(&self, reason: &str) {
        self.handshakes.with_label_values(&[reason]).inc();
    }

    pub fn unauthenticated(&self, reason: &str) {
        self.unauthenticated.with_label_values(&[reason]).inc();
    }

    /// A call admitted without a token (`--auth-accepts-anonymous`).
    pub fn anonymous_admitted(&self) {
        self.anonymous.inc();
    }

    /// Calls admitted without a token so far.
    pub fn anonymous(&self) -> u64 {
        self.anonymous.get()
    }

    pub fn not_a_peer(&self) {
        self.not_peers.inc();
    }
}
