//! Prometheus metrics of a node (prefix `kcache_`). Request metrics are recorded as
//! requests finish; store figures are read from the store at scrape time, so they
//! cost nothing on the data path.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use prometheus::core::{Collector, Desc};
use prometheus::local::{LocalHistogram, LocalIntCounter};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::store::Store;

/// Latency buckets in seconds: an in-memory op takes microseconds, a forwarded one or
/// a big batch milliseconds; anything past a second is a problem to see, not resolve.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// The node's registry and the request instruments the service records into.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    members: IntGauge,
    forwarded: IntCounterVec,
    replication_errors: IntCounter,
    read_through: IntCounter,
    handoff_entries: IntCounter,
    handoff_bytes: IntCounter,
    handoff_duration: prometheus::Histogram,
    /// Tells this node's instruments from another's in [`OK_INSTRUMENTS`] (tests run
    /// several nodes in one process).
    id: u64,
}

/// The next [`Metrics::id`].
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    /// The instruments of requests that answered OK, by node, protocol and operation
    /// (the addresses of the static label strings): found once per thread, so the hot
    /// path does no label hashing, takes no lock and bumps no reference count, where
    /// `with_label_values` does all three twice per request.
    static OK_INSTRUMENTS: std::cell::RefCell<OkInstruments> = std::cell::RefCell::default();
}

type OkInstruments = std::collections::HashMap<
    (u64, Label, Label),
    (IntCounter, prometheus::Histogram),
    foldhash::fast::RandomState,
>;

/// A static label string by address and length: two labels never share both (one
/// string a prefix of another at the same address, e.g. "get" in "getdel", differs
/// in length). One label at two addresses only finds the same instruments twice.
type Label = (usize, usize);

fn label(name: &'static str) -> Label {
    (name.as_ptr() as usize, name.len())
}

/// Handoff passes take from milliseconds (nothing moves) to minutes (gigabytes move).
const HANDOFF_BUCKETS: &[f64] = &[0.01, 0.05, 0.25, 1.0, 5.0, 15.0, 60.0, 300.0];

impl Metrics {
    pub fn new(store: Arc<Store>) -> Self {
        let registry = Registry::new_custom(Some("kcache".into()), None)
            .expect("a constant prefix is a valid registry");
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Requests handled, by protocol (grpc, redis), operation and gRPC code.",
            ),
            &["protocol", "op", "code"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time to handle a request, by protocol and operation.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["protocol", "op"],
        )
        .expect("valid metric");
        let members =
            IntGauge::new("members", "Members this node places keys on.").expect("valid metric");
        let forwarded = IntCounterVec::new(
            Opts::new(
                "forwarded_requests_total",
                "Requests this node passed to a key's owner, by operation.",
            ),
            &["op"],
        )
        .expect("valid metric");
        let replication_errors = IntCounter::new(
            "replication_errors_total",
            "Writes that could not be copied to one of the key's other owners.",
        )
        .expect("valid metric");
        let read_through = IntCounter::new(
            "read_through_total",
            "Local misses found at a key's previous or other owner while a handoff was on its way.",
        )
        .expect("valid metric");
        let handoff_entries = IntCounter::new(
            "handoff_entries_total",
            "Entries streamed to their new owners after membership changes.",
        )
        .expect("valid metric");
        let handoff_bytes = IntCounter::new(
            "handoff_bytes_total",
            "Key and value bytes streamed to new owners.",
        )
        .expect("valid metric");
        let handoff_duration = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "handoff_duration_seconds",
                "Time of one handoff pass over the store.",
            )
            .buckets(HANDOFF_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn Collector>,
            Box::new(duration.clone()),
            Box::new(StoreCollector::new(store)),
            Box::new(members.clone()),
            Box::new(forwarded.clone()),
            Box::new(replication_errors.clone()),
            Box::new(read_through.clone()),
            Box::new(handoff_entries.clone()),
            Box::new(handoff_bytes.clone()),
            Box::new(handoff_duration.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            requests,
            duration,
            members,
            forwarded,
            replication_errors,
            read_through,
            handoff_entries,
            handoff_bytes,
            handoff_duration,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Adds collectors kept elsewhere (the security counters) to /metrics.
    pub fn register(&self, collectors: Vec<Box<dyn Collector>>) {
        for collector in collectors {
            self.registry
                .register(collector)
                .expect("metric names are unique");
        }
    }

    pub fn set_members(&self, members: usize) {
        self.members.set(members as i64);
    }

    pub fn forwarded(&self, op: &str) {
        self.forwarded.with_label_values(&[op]).inc();
    }

    pub fn replication_error(&self) {
        self.replication_errors.inc();
    }

    pub fn read_through(&self) {
        self.read_through.inc();
    }

    pub fn handoff(&self, entries: u64, bytes: u64, took: std::time::Duration) {
        self.handoff_entries.inc_by(entries);
        self.handoff_bytes.inc_by(bytes);
        self.handoff_duration.observe(took.as_secs_f64());
    }

    /// Records one finished request that came in over `protocol`. A Redis command's
    /// outcome is labelled with the gRPC code of the service's answer, so one alert on
    /// codes covers both ports.
    pub fn observe(
        &self,
        protocol: &'static str,
        op: &'static str,
        code: tonic::Code,
        started: Instant,
    ) {
        let seconds = started.elapsed().as_secs_f64();
        if code == tonic::Code::Ok {
            return self.with_ok_instruments(protocol, op, |count, duration| {
                count.inc();
                duration.observe(seconds);
            });
        }
        self.requests
            .with_label_values(&[protocol, op, code_label(code)])
            .inc();
        self.duration
            .with_label_values(&[protocol, op])
            .observe(seconds);
    }

    /// Runs `f` on the instruments of requests over `protocol` for `op` that
    /// answered OK, found once per thread.
    fn with_ok_instruments<T>(
        &self,
        protocol: &'static str,
        op: &'static str,
        f: impl FnOnce(&IntCounter, &prometheus::Histogram) -> T,
    ) -> T {
        OK_INSTRUMENTS.with_borrow_mut(|instruments| {
            let (count, duration) = instruments
                .entry((self.id, label(protocol), label(op)))
                .or_insert_with(|| {
                    (
                        self.requests.with_label_values(&[
                            protocol,
                            op,
                            code_label(tonic::Code::Ok),
                        ]),
                        self.duration.with_label_values(&[protocol, op]),
                    )
                });
            f(count, duration)
        })
    }

    /// Counts for one connection that answers a pipeline of requests (the Redis
    /// port): see [`LocalRequests`].
    pub fn local_requests(&self, protocol: &'static str) -> LocalRequests<'_> {
        LocalRequests {
            metrics: self,
            protocol,
            ok: Mutex::new(Vec::new()),
        }
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

/// gRPC code names as the gRPC ecosystem's Prometheus middlewares label them.
fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Reads the store's counters and gauges when Prometheus scrapes.
#[derive(Debug)]
struct StoreCollector {
    store: Arc<Store>,
    /// Scrapes may run concurrently; the counters are brought up to date one at a time.
    refresh: Mutex<()>,
    hits: IntCounter,
    misses: IntCounter,
    evictions: IntCounter,
    expirations: IntCounter,
    tombstones_dropped: IntCounter,
    items: IntGauge,
    bytes: IntGauge,
    limit: IntGauge,
    budget: IntGauge,
    tombstones: IntGauge,
}

impl StoreCollector {
    fn new(store: Arc<Store>) -> Self {
        let counter = |name: &str, help: &str| {
            IntCounter::with_opts(Opts::new(name, help)).expect("valid metric")
        };
        let gauge = |name: &str, help: &str| {
            IntGauge::with_opts(Opts::new(name, help)).expect("valid metric")
        };
        Self {
            store,
            refresh: Mutex::new(()),
            hits: counter("hits_total", "Reads that found their key."),
            misses: counter("misses_total", "Reads that did not find their key."),
            evictions: counter(
                "evictions_total",
                "Entries evicted to stay within the memory limit.",
            ),
            expirations: counter(
                "expirations_total",
                "Entries removed because their TTL passed.",
            ),
            tombstones_dropped: counter(
                "tombstones_dropped_total",
                "Deletes forgotten before their horizon to keep tombstones within a sixteenth of the memory limit.",
            ),
            items: gauge("items", "Entries in the store."),
            tombstones: gauge(
                "tombstones",
                "Deletes remembered so that an older copy cannot bring their keys back.",
            ),
            bytes: gauge(
                "memory_bytes",
                "Bytes charged against the memory limit (keys, values, per-entry overhead).",
            ),
            limit: gauge("memory_limit_bytes", "The memory limit (--max-memory)."),
            budget: gauge(
                "memory_budget_bytes",
                "What the store may hold now: the memory limit, lowered (to half of it at most) while resident memory is over its allowance: by the excess, by 8x the excess while resident memory rises beyond what the store's charges grew and writes evict.",
            ),
        }
    }

    fn counters(&self) -> [&IntCounter; 5] {
        [
            &self.hits,
            &self.misses,
            &self.evictions,
            &self.expirations,
            &self.tombstones_dropped,
        ]
    }

    fn gauges(&self) -> [&IntGauge; 5] {
        [
            &self.items,
            &self.bytes,
            &self.limit,
            &self.budget,
            &self.tombstones,
        ]
    }
}

impl Collector for StoreCollector {
    fn desc(&self) -> Vec<&Desc> {
        let counters = self.counters().into_iter().flat_map(|c| c.desc());
        let gauges = self.gauges().into_iter().flat_map(|g| g.desc());
        counters.chain(gauges).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one_at_a_time = self.refresh.lock();
        let stats = self.store.stats();
        let totals = [
            stats.hits,
            stats.misses,
            stats.evictions,
            stats.expirations,
            stats.tombstones_dropped,
        ];
        for (counter, total) in self.counters().into_iter().zip(totals) {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        for (gauge, value) in self.gauges().into_iter().zip([
            stats.items,
            stats.bytes,
            stats.limit,
            stats.budget,
            stats.tombstones,
        ]) {
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        }
        let counters = self.counters().into_iter().flat_map(|c| c.collect());
        let gauges = self.gauges().into_iter().flat_map(|g| g.collect());
        counters.chain(gauges).collect()
    }
}

/// One connection's requests that answered OK, kept in instruments of its own until
/// [`LocalRequests::flush`] adds them to the shared ones: at the end of every batch
/// of pipelined commands, before the replies are written, so a client that has its
/// reply sees it counted. A request on the shared instruments updates five atomics
/// that every core writes (the counter, the histogram's bucket, count, sum and
/// shard); per batch of 16 commands that is a sixteenth of that. Other outcomes go
/// to the shared instruments at once ([`Metrics::observe`]).
pub struct LocalRequests<'a> {
    metrics: &'a Metrics,
    protocol: &'static str,
    /// Per op: the counter with code OK and the duration histogram. A lock that
    /// only this connection takes (it is held across no await), so that the futures
    /// holding it stay `Send`.
    ok: Mutex<Vec<(Label, LocalIntCounter, LocalHistogram)>>,
}

impl std::fmt::Debug for LocalRequests<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRequests")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl LocalRequests<'_> {
    /// Records one finished request.
    pub fn observe(&self, op: &'static str, code: tonic::Code, started: Instant) {
        if code != tonic::Code::Ok {
            return self.metrics.observe(self.protocol, op, code, started);
        }
        let seconds = started.elapsed().as_secs_f64();
        let mut ok = self.ok.lock();
        let key = label(op);
        let index = match ok.iter().position(|(k, ..)| *k == key) {
            Some(index) => index,
            None => {
                let (count, duration) =
                    self.metrics
                        .with_ok_instruments(self.protocol, op, |c, d| (c.local(), d.local()));
                ok.push((key, count, duration));
                ok.len() - 1
            }
        };
        let (_, count, duration) = &ok[index];
        count.inc();
        duration.observe(seconds);
    }

    /// Adds what was recorded since the last flush to the shared instruments.
    pub fn flush(&self) {
        for (_, count, duration) in self.ok.lock().iter() {
            count.flush();
            duration.flush();
        }
    }
}

impl Drop for LocalRequests<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}
