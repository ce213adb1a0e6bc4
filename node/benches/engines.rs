//! Chooses the store engine by measurement: kcache's own store against moka,
//! quick_cache and a bounded dashmap (and plain LRU for hit ratio), on the same keys,
//! values and traces.
//! Prints a Markdown table for the README.
//!
//! `cargo bench -p kcache-node --bench engines`
#![allow(clippy::unwrap_used)] // a benchmark that cannot set up should fail loudly

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use cap::Cap;
use kcache_cli::workload::Zipf;
use kcache_node::store::{Condition, Limits, Store, Ttl, charge};

#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 100;
/// Entries inserted to measure memory per entry.
const FILL: u64 = 500_000;
/// Distinct keys of the hit-ratio trace; the caches hold about a tenth.
const TRACE_KEYS: usize = 1_000_000;
const TRACE_LEN: usize = 3_000_000;
/// Memory every engine gets for the hit-ratio trace: 100,000 of kcache's entries.
const BUDGET: u64 = 100_000 * charge(1 + KEY_LEN + VALUE_LEN);
const THREADS: u64 = 2;

fn key(i: u64) -> Box<[u8]> {
    let mut key = vec![0u8; KEY_LEN];
    key[..8].copy_from_slice(&i.to_be_bytes());
    key.into()
}

fn value() -> Box<[u8]> {
    vec![b'v'; VALUE_LEN].into()
}

/// The operations the comparison needs, over any engine.
trait Engine: Send + Sync {
    fn get(&self, key: &[u8]) -> bool;
    fn set(&self, key: Box<[u8]>, value: Box<[u8]>);
}

struct Kcache(Store);

impl Engine for Kcache {
    fn get(&self, key: &[u8]) -> bool {
        self.0.get(key).unwrap().is_some()
    }
    fn set(&self, key: Box<[u8]>, value: Box<[u8]>) {
        self.0
            .set(&key, &value, Ttl::Never, Condition::Always)
            .unwrap();
    }
}

struct Moka(moka::sync::Cache<Box<[u8]>, Box<[u8]>>);

impl Engine for Moka {
    fn get(&self, key: &[u8]) -> bool {
        self.0.get(key).is_some()
    }
    fn set(&self, key: Box<[u8]>, value: Box<[u8]>) {
        self.0.insert(key, value);
    }
}

struct Quick(quick_cache::sync::Cache<Box<[u8]>, Box<[u8]>>);

impl Engine for Quick {
    fn get(&self, key: &[u8]) -> bool {
        self.0.get(key).is_some()
    }
    fn set(&self, key: Box<[u8]>, value: Box<[u8]>) {
        self.0.insert(key, value);
    }
}

type Stamped = (u64, Box<[u8]>);

/// "Just use a concurrent map": dashmap, bounded the simplest way (past its capacity,
/// an insert first removes whichever entry the map yields first). No recency, no
/// frequency, no memory accounting.
struct Dash {
    map: dashmap::DashMap<Box<[u8]>, Box<[u8]>>,
    capacity: usize,
}

impl Engine for Dash {
    fn get(&self, key: &[u8]) -> bool {
        self.map.contains_key(key)
    }
    fn set(&self, key: Box<[u8]>, value: Box<[u8]>) {
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            let victim = self.map.iter().next().map(|e| e.key().clone());
            if let Some(victim) = victim {
                self.map.remove(&victim);
            }
        }
        self.map.insert(key, value);
    }
}

/// Plain LRU by entry count, the baseline eviction policies are judged against.
#[derive(Default)]
struct Lru {
    capacity: usize,
    clock: u64,
    /// key -> (last use, value)
    stamps: HashMap<Box<[u8]>, Stamped>,
    order: BTreeMap<u64, Box<[u8]>>,
}

impl Lru {
    fn get(&mut self, key: &[u8]) -> bool {
        self.clock += 1;
        let Some((stamp, _)) = self.stamps.get_mut(key) else {
            return false;
        };
        let key = self.order.remove(stamp).unwrap();
        *stamp = self.clock;
        self.order.insert(self.clock, key);
        true
    }
    fn set(&mut self, key: Box<[u8]>, value: Box<[u8]>) {
        self.clock += 1;
        if self.stamps.len() >= self.capacity {
            let (_, victim) = self.order.pop_first().unwrap();
            self.stamps.remove(&victim);
        }
        self.order.insert(self.clock, key.clone());
        self.stamps.insert(key, (self.clock, value));
    }
}

fn kcache(max_memory: u64) -> Kcache {
    Kcache(Store::new(Limits {
        max_memory,
        ..Limits::default()
    }))
}

fn moka(entries: u64) -> Moka {
    Moka(moka::sync::Cache::new(entries))
}

fn quick(entries: u64) -> Quick {
    Quick(quick_cache::sync::Cache::new(entries as usize))
}

fn dash(entries: u64) -> Dash {
    Dash {
        map: dashmap::DashMap::with_capacity(entries as usize),
        capacity: entries as usize,
    }
}

/// Heap bytes an engine holds per entry beyond key and value, after `FILL` inserts.
fn overhead_per_entry(make: impl FnOnce() -> Box<dyn Engine>) -> f64 {
    let before = ALLOCATOR.allocated();
    let engine = make();
    for i in 0..FILL {
        engine.set(key(i), value());
    }
    // moka applies writes asynchronously in batches; a read of every key lets it catch up.
    for i in 0..FILL {
        engine.get(&key(i));
    }
    let bytes = ALLOCATOR.allocated() - before;
    drop(engine);
    bytes as f64 / FILL as f64 - (KEY_LEN + VALUE_LEN) as f64
}

fn trace() -> Vec<u64> {
    let mut zipf = Zipf::new(TRACE_KEYS, 0.99, 99);
    (0..TRACE_LEN).map(|_| zipf.next_rank()).collect()
}

/// Cache-aside over the trace: read, and write on a miss. Returns the hit ratio.
fn hit_ratio(engine: &dyn Engine, trace: &[u64]) -> f64 {
    let mut hits = 0;
    for &rank in trace {
        let key = key(rank);
        if engine.get(&key) {
            hits += 1;
        } else {
            engine.set(key, value());
        }
    }
    hits as f64 / trace.len() as f64
}

fn lru_hit_ratio(capacity: usize, trace: &[u64]) -> f64 {
    let mut lru = Lru {
        capacity,
        ..Lru::default()
    };
    let mut hits = 0;
    for &rank in trace {
        let key = key(rank);
        if lru.get(&key) {
            hits += 1;
        } else {
            lru.set(key, value());
        }
    }
    hits as f64 / trace.len() as f64
}

/// Cache-aside from `THREADS` threads, each its own slice of the trace; ops per second.
fn throughput(engine: Arc<dyn Engine>, trace: Arc<Vec<u64>>) -> f64 {
    let started = Instant::now();
    let chunk = trace.len() / THREADS as usize;
    let threads: Vec<_> = (0..THREADS as usize)
        .map(|t| {
            let (engine, trace) = (engine.clone(), trace.clone());
            std::thread::spawn(move || {
                let mut ops = 0u64;
                for &rank in &trace[t * chunk..(t + 1) * chunk] {
                    let key = key(rank);
                    ops += 1;
                    if !engine.get(&key) {
                        engine.set(key, value());
                        ops += 1;
                    }
                }
                ops
            })
        })
        .collect();
    let ops: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    ops as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing to run for.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let trace = Arc::new(trace());
    let entry = (KEY_LEN + VALUE_LEN) as f64;
    let capacity_for = |overhead: f64| (BUDGET as f64 / (entry + overhead)) as u64;

    let kcache_overhead = overhead_per_entry(|| Box::new(kcache(1 << 32)));
    let moka_overhead = overhead_per_entry(|| Box::new(moka(FILL * 2)));
    let quick_overhead = overhead_per_entry(|| Box::new(quick(FILL * 2)));
    let dash_overhead = overhead_per_entry(|| Box::new(dash(FILL * 2)));

    // Every engine holds as many entries as its measured overhead allows in BUDGET;
    // kcache charges allocator rounding on top, so its limit is set to that count.
    let kcache_limit = capacity_for(kcache_overhead) * charge(1 + KEY_LEN + VALUE_LEN);
    let kcache_hits = hit_ratio(&kcache(kcache_limit), &trace);
    let moka_hits = hit_ratio(&moka(capacity_for(moka_overhead)), &trace);
    let quick_hits = hit_ratio(&quick(capacity_for(quick_overhead)), &trace);
    let dash_hits = hit_ratio(&dash(capacity_for(dash_overhead)), &trace);
    let lru_hits = lru_hit_ratio(capacity_for(kcache_overhead) as usize, &trace);

    let kcache_ops = throughput(Arc::new(kcache(kcache_limit)), trace.clone());
    let moka_ops = throughput(Arc::new(moka(capacity_for(moka_overhead))), trace.clone());
    let quick_ops = throughput(Arc::new(quick(capacity_for(quick_overhead))), trace.clone());
    let dash_ops = throughput(Arc::new(dash(capacity_for(dash_overhead))), trace.clone());

    println!(
        "Entries of {KEY_LEN}-byte keys and {VALUE_LEN}-byte values. Hit ratio: cache-aside over \
         {TRACE_LEN} Zipf(0.99) requests on {TRACE_KEYS} keys, each engine given {} MiB \
         (its entry capacity from its own overhead). Throughput: the same trace from \
         {THREADS} threads, gets plus sets on misses.\n",
        BUDGET >> 20
    );
    println!("| engine | heap overhead per entry (bytes) | hit ratio | ops/s (M) |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, overhead: Option<f64>, hits: f64, ops: Option<f64>| {
        let overhead = overhead.map_or("-".into(), |o| format!("{o:.1}"));
        let ops = ops.map_or("-".into(), |o| format!("{:.2}", o / 1e6));
        println!("| {name} | {overhead} | {hits:.4} | {ops} |");
    };
    row(
        "kcache store",
        Some(kcache_overhead),
        kcache_hits,
        Some(kcache_ops),
    );
    row(
        "moka 0.12 (sync)",
        Some(moka_overhead),
        moka_hits,
        Some(moka_ops),
    );
    row(
        "quick_cache 0.7",
        Some(quick_overhead),
        quick_hits,
        Some(quick_ops),
    );
    row(
        "dashmap 6, bounded by arbitrary removal",
        Some(dash_overhead),
        dash_hits,
        Some(dash_ops),
    );
    row("plain LRU (reference)", None, lru_hits, None);
}
