//! Micro-benchmarks of the store's operations (`cargo bench -p kcache-node --bench store`).
#![allow(clippy::unwrap_used)] // a benchmark that cannot set up should fail loudly

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kcache_cli::workload::Zipf;
use kcache_node::store::{Condition, Limits, Store, Ttl};

const KEYS: u64 = 100_000;

fn key(i: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&i.to_be_bytes());
    key
}

fn filled(max_memory: u64) -> Store {
    let store = Store::new(Limits {
        max_memory,
        ..Limits::default()
    });
    for i in 0..KEYS {
        store
            .set(&key(i), &[7; 100], Ttl::Never, Condition::Always)
            .unwrap();
    }
    store
}

fn operations(c: &mut Criterion) {
    let store = filled(1 << 30);
    let mut zipf = Zipf::new(KEYS as usize, 0.99, 1);
    c.bench_function("get hit (zipf 0.99)", |b| {
        b.iter(|| black_box(store.get(&key(zipf.next_rank())).unwrap()))
    });
    c.bench_function("get miss", |b| {
        let mut i = KEYS;
        b.iter(|| {
            i += 1;
            black_box(store.get(&key(i)).unwrap())
        })
    });
    c.bench_function("set 100 B, no eviction", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % KEYS;
            store
                .set(&key(i), &[1; 100], Ttl::Never, Condition::Always)
                .unwrap()
        })
    });
    c.bench_function("incr", |b| {
        b.iter(|| store.incr(b"counter", 1, 0, Ttl::Never).unwrap())
    });
    // A store a tenth of the working set: every new key evicts one.
    let small = filled(2 << 20);
    c.bench_function("set 100 B, evicting", |b| {
        let mut i = KEYS;
        b.iter(|| {
            i += 1;
            small
                .set(&key(i), &[1; 100], Ttl::Never, Condition::Always)
                .unwrap()
        })
    });
}

criterion_group!(benches, operations);
criterion_main!(benches);
