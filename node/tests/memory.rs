//! The real binary under a flood of writes ten times its memory limit: resident memory
//! stays within 10% of `--max-memory` above the process's own base.
//!
//! `FLOOD_MIB=256 cargo test -p kcache-node --test memory -- --nocapture` floods a
//! larger node.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod process;

use std::time::Instant;

use futures::StreamExt as _;
use kcache_client::proto::{MultiSetRequest, SetRequest, StatsRequest, cache_client::CacheClient};
use kcache_node::store::charge;
use process::NodeProcess;
use tonic::transport::Channel;

/// Batches in flight at once: enough to keep both of the node's cores busy.
const IN_FLIGHT: usize = 4;

/// A batch of entries with 16-byte keys: `n` names the batch, `value_len` gives each
/// entry's value length from its index.
fn batch(n: u64, count: u64, value_len: impl Fn(u64) -> usize) -> MultiSetRequest {
    let items = (0..count)
        .map(|i| SetRequest {
            key: format!("{:016x}", n.wrapping_mul(count).wrapping_add(i))
                .into_bytes()
                .into(),
            value: vec![b'x'; value_len(i)].into(),
            ..SetRequest::default()
        })
        .collect();
    MultiSetRequest { items }
}

/// One shape of traffic: batches of `count` entries until `charged` bytes of entries
/// (as the store charges them) have been written.
struct Flood {
    name: &'static str,
    count: u64,
    value_len: fn(u64) -> usize,
}

impl Flood {
    fn batch_charge(&self) -> u64 {
        (0..self.count)
            .map(|i| charge(1 + 16 + (self.value_len)(i)))
            .sum()
    }
}

/// Small entries: the most per-entry overhead.
const SMALL: Flood = Flood {
    name: "16 B keys, 100 B values",
    count: 1_000,
    value_len: |_| 100,
};
/// Values from 1 to 8 KiB.
const LARGE: Flood = Flood {
    name: "16 B keys, 1-8 KiB values",
    count: 64,
    value_len: |i| 1024 + (i as usize * 7_919) % (7 << 10),
};
/// Every size at once: each batch holds 100-byte values and 1 to 8 KiB ones.
const MIXED: Flood = Flood {
    name: "16 B keys, 100 B and 1-8 KiB values mixed",
    count: 128,
    value_len: |i| {
        if i % 2 == 0 {
            100
        } else {
            1024 + (i as usize * 7_919) % (7 << 10)
        }
    },
};

struct Sampler<'a> {
    node: &'a NodeProcess,
    peak: u64,
}

impl Sampler<'_> {
    fn sample(&mut self) {
        self.peak = self.peak.max(self.node.rss_bytes());
    }
}

async fn write_all(
    client: &CacheClient<Channel>,
    flood: &Flood,
    first: u64,
    batches: u64,
    sampler: &mut Sampler<'_>,
) {
    let mut calls = futures::stream::iter(first..first + batches)
        .map(|n| {
            let mut client = client.clone();
            let request = batch(n, flood.count, flood.value_len);
            async move { client.multi_set(request).await }
        })
        .buffer_unordered(IN_FLIGHT);
    let mut done = 0u64;
    while let Some(reply) = calls.next().await {
        assert_eq!(
            reply.unwrap().into_inner().results.len() as u64,
            flood.count
        );
        done += 1;
        if done.is_multiple_of(16) {
            sampler.sample();
        }
    }
    sampler.sample();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_ten_times_the_limit_keeps_resident_memory_within_a_tenth_of_it() {
    flood(&[(&LARGE, 10)]).await;
}

/// Every size at once: small entries freed among large ones leave holes the large
/// values fit only in part (before entries were charged for it, growth was 1.09x to
/// 1.13x the limit at 64 MiB; now about 1.00x).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_mixed_sizes_keeps_resident_memory_within_a_tenth_of_the_limit() {
    flood(&[(&MIXED, 10)]).await;
}

/// Small entries until the store is full five times over, then 1 to 8 KiB values five
/// times over. Eviction frees the small entries' blocks in random order, so for most of
/// the change their holes are too small for the new values and the heap grows past
/// them. The store's charges cannot see that; the node's resident-memory guard
/// (`src/memory.rs`) does, and evicts harder and trims the allocator while resident
/// memory is over its allowance. Measured at 64 MiB: peak growth 1.44x the limit
/// without the guard, 1.03-1.07x with it (1.05x at `FLOOD_MIB=256`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_whose_value_sizes_change_keeps_resident_memory_within_a_tenth_of_the_limit() {
    flood(&[(&SMALL, 5), (&LARGE, 5)]).await;
}

/// Writes each shape, in order, until it has written its multiple of the limit; checks
/// that the store stayed within the limit, that resident memory, sampled throughout,
/// peaked within 10% of the limit above the base, and that once the guard has given
/// the store its whole budget back, writing the limit once more fills it.
async fn flood(floods: &[(&Flood, u64)]) {
    let limit: u64 = std::env::var("FLOOD_MIB").map_or(64, |v| v.parse().unwrap()) << 20;
    let node = NodeProcess::start(&["--max-memory", &format!("{}MiB", limit >> 20)]);
    let client = CacheClient::connect(format!("http://{}", node.grpc))
        .await
        .unwrap();
    let mut sampler = Sampler {
        node: &node,
        peak: 0,
    };
    // Warm up the request path with full-size batches of each shape, in flight as
    // the flood will be, so the base includes the server's buffers; then measure what
    // the entries add.
    for (flood, _) in floods {
        write_all(&client, flood, u64::MAX - 8, IN_FLIGHT as u64, &mut sampler).await;
    }
    let base = node.rss_bytes();
    sampler.peak = base;
    let started = Instant::now();
    let mut first = 0;
    let mut written = 0;
    for &(flood, times) in floods {
        let batches = (times * limit).div_ceil(flood.batch_charge());
        write_all(&client, flood, first, batches, &mut sampler).await;
        first += batches;
        written += batches * flood.batch_charge();
        let rss = node.rss_bytes();
        eprintln!(
            "after {}: {:.1}x the limit written, rss {:.1} MiB (base {:.1} MiB, growth {:.3}x the limit)",
            flood.name,
            written as f64 / limit as f64,
            rss as f64 / (1 << 20) as f64,
            base as f64 / (1 << 20) as f64,
            rss.saturating_sub(base) as f64 / limit as f64,
        );
    }
    // The guard may have lowered the store's budget near the end and evicted down to
    // it; once resident memory is back within the allowance the budget returns to the
    // limit, and a last limit's worth of the last shape fills the store again.
    let budget_restored = async {
        while node.metric("kcache_memory_budget_bytes") != Some(limit as f64) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), budget_restored)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the store's budget stayed at {:?} bytes for 30 s after the flood (limit {limit}, rss {})",
                node.metric("kcache_memory_budget_bytes"),
                node.rss_bytes()
            )
        });
    let (last, _) = floods[floods.len() - 1];
    write_all(
        &client,
        last,
        first,
        limit.div_ceil(last.batch_charge()),
        &mut sampler,
    )
    .await;
    let stats = client
        .clone()
        .stats(StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    let stats = &stats.nodes[0];
    let growth = sampler.peak.saturating_sub(base);
    eprintln!(
        "flood of {:.1} MiB charged in {:.1} s: items {} charged {} (budget {:?}) evictions {}; peak rss {:.1} MiB = base {:.1} MiB + {:.3}x the limit",
        written as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64(),
        stats.items,
        stats.bytes,
        node.metric("kcache_memory_budget_bytes"),
        stats.evictions,
        sampler.peak as f64 / (1 << 20) as f64,
        base as f64 / (1 << 20) as f64,
        growth as f64 / limit as f64,
    );
    assert!(written >= 10 * limit);
    assert!(stats.bytes <= limit, "{} charged over {limit}", stats.bytes);
    // Where the flood leaves the allocator's free memory resident (the size change),
    // the guard keeps part of the budget back for as long as it is: measured 92-98% of
    // the limit held after the refill, 100% for the other shapes.
    assert!(
        stats.bytes >= limit * 8 / 10,
        "the store holds {} bytes of {limit} after the refill: the flood did not fill it or the guard holds back more than a fifth",
        stats.bytes
    );
    assert!(
        growth <= limit + limit / 10,
        "resident memory peaked {growth} bytes above the base for a {limit}-byte limit"
    );
}
