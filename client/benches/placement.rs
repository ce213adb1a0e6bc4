//! A key's owners from the slot table, beside the per-key rendezvous of earlier
//! releases, and the cost of building a view's table
//! (`cargo bench -p kcache-client --bench placement`).
#![allow(clippy::unwrap_used)] // a benchmark that cannot set up should fail loudly

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kcache_client::placement::{Member, View, stable_hash, weight};

fn members(n: usize) -> Vec<Member> {
    (0..n)
        .map(|i| Member {
            id: format!("kcache-{i}"),
            address: format!("10.0.0.{i}:7000"),
        })
        .collect()
}

/// Earlier releases' placement: the R members of highest weight for the key's hash.
fn rendezvous(member_hashes: &[u64], key_hash: u64, r: usize) -> Vec<usize> {
    let mut best: Vec<(u64, usize)> = Vec::with_capacity(r + 1);
    for (i, &m) in member_hashes.iter().enumerate() {
        let w = weight(m, key_hash);
        if best.len() < r || w > best[best.len() - 1].0 {
            let at = best.partition_point(|&(bw, _)| bw > w);
            best.insert(at, (w, i));
            best.truncate(r);
        }
    }
    best.into_iter().map(|(_, i)| i).collect()
}

fn owners(c: &mut Criterion) {
    let keys: Vec<Vec<u8>> = (0..4096)
        .map(|i| format!("user:{i}:profile").into_bytes())
        .collect();
    let mut group = c.benchmark_group("owners of a key, R=2");
    for n in [3, 16, 64] {
        let view = View::new(members(n));
        view.owners(b"warm", 2);
        let hashes: Vec<u64> = view
            .members()
            .iter()
            .map(|m| stable_hash(m.id.as_bytes()))
            .collect();
        let mut i = 0;
        group.bench_function(BenchmarkId::new("slot table", n), |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                black_box(view.owners(&keys[i], 2).len())
            })
        });
        group.bench_function(BenchmarkId::new("per-key rendezvous", n), |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                black_box(rendezvous(&hashes, stable_hash(&keys[i]), 2).len())
            })
        });
    }
    group.finish();
    let mut group = c.benchmark_group("slot table of a new view, R=2");
    group.sample_size(10);
    for n in [3, 16, 64] {
        let members = members(n);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| black_box(View::new(members.clone()).slot_owners(0, 2).len()))
        });
    }
    group.finish();
}

criterion_group!(benches, owners);
criterion_main!(benches);
