//! Real kcache-node processes with static membership: a member killed with SIGKILL
//! loses no acknowledged key (R=2), and a restarted member refills from its peers.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use std::time::Duration;

use common::process::{Process, client, members, spawn};

use kcache_client::proto::{
    MultiGetRequest, MultiSetRequest, SetRequest, StatsRequest, cache_client::CacheClient,
};
use tonic::transport::Channel;

fn key(i: u64) -> bytes::Bytes {
    format!("key-{i:06}").into_bytes().into()
}

async fn readable(client: &mut CacheClient<Channel>, count: u64) -> usize {
    let mut found = 0;
    for start in (0..count).step_by(500) {
        let keys = (start..(start + 500).min(count)).map(key).collect();
        let values = client
            .multi_get(MultiGetRequest { keys })
            .await
            .unwrap()
            .into_inner()
            .values;
        found += values.iter().filter(|v| v.found).count();
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_loses_no_acknowledged_key_and_refills_when_restarted() {
    let (specs, peers) = members(3);
    let mut processes: Vec<Option<Process>> =
        specs.iter().map(|s| Some(spawn(s, &peers, &[]))).collect();

    const KEYS: u64 = 10_000;
    let mut writer = client(&specs[0]).await;
    for start in (0..KEYS).step_by(500) {
        let items = (start..start + 500)
            .map(|i| SetRequest {
                key: key(i),
                value: vec![b'v'; 100].into(),
                ..SetRequest::default()
            })
            .collect();
        let results = writer
            .multi_set(MultiSetRequest { items })
            .await
            .unwrap()
            .into_inner()
            .results;
        assert!(results.iter().all(|r| r.stored));
    }
    for spec in &specs[1..] {
        assert_eq!(
            readable(&mut client(spec).await, KEYS).await,
            KEYS as usize,
            "via {}",
            spec.id
        );
    }

    // SIGKILL: no drain, no handoff.
    processes[2] = None;
    for spec in &specs[..2] {
        assert_eq!(
            readable(&mut client(spec).await, KEYS).await,
            KEYS as usize,
            "via {} with kcache-2 dead",
            spec.id
        );
    }

    // Restarted with the same identity, it asks its peers for its keys.
    processes[2] = Some(spawn(&specs[2], &peers, &[]));
    let mut restarted = client(&specs[2]).await;
    let mut items = 0;
    for _ in 0..100 {
        let stats = restarted.stats(StatsRequest {}).await.unwrap().into_inner();
        items = stats
            .nodes
            .iter()
            .find(|n| n.node_id == "kcache-2")
            .unwrap()
            .items;
        if items > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(readable(&mut restarted, KEYS).await, KEYS as usize);
    let stats = restarted.stats(StatsRequest {}).await.unwrap().into_inner();
    let total: u64 = stats.nodes.iter().map(|n| n.items).sum();
    eprintln!(
        "after restart: {:?}",
        stats
            .nodes
            .iter()
            .map(|n| (&n.node_id, n.items))
            .collect::<Vec<_>>()
    );
    assert!(items > 0, "the restarted member refilled");
    assert_eq!(total, 2 * KEYS, "two copies of every key again");
    drop(processes);
}
