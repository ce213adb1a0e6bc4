//! A second membership change while the first one's handoff is still moving entries:
//! the handoff for the first placement is abandoned for the newer one, and no key is
//! lost.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use std::time::Duration;

use common::cluster::{Cluster, Node};
use kcache_client::placement::View;
use kcache_client::proto::{
    GetRequest, MultiGetRequest, MultiSetRequest, SetRequest, StatsRequest,
    cache_client::CacheClient,
};
use kcache_node::service::{HOP_HEADER, PROBE};
use kcache_node::store::Limits;

const KEYS: u64 = 20_000;

fn key(i: u64) -> bytes::Bytes {
    format!("churn-{i:06}").into_bytes().into()
}

async fn items(node: &Node) -> u64 {
    let mut client = CacheClient::new(node.channel());
    let stats = client.stats(StatsRequest {}).await.unwrap().into_inner();
    stats
        .nodes
        .iter()
        .find(|n| n.node_id == node.id)
        .map_or(0, |n| n.items)
}

/// Keys of `0..KEYS` a GET through `node` does not find.
async fn missing(node: &Node) -> Vec<u64> {
    let mut client = CacheClient::new(node.channel()).max_decoding_message_size(64 << 20);
    let mut missing = Vec::new();
    for start in (0..KEYS).step_by(1_000) {
        let keys = (start..start + 1_000).map(key).collect();
        let values = client
            .multi_get(MultiGetRequest { keys })
            .await
            .unwrap()
            .into_inner()
            .values;
        missing.extend(
            (start..)
                .zip(values)
                .filter(|(_, v)| !v.found)
                .map(|(i, _)| i),
        );
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_change_in_the_middle_of_a_handoff_loses_no_key() {
    let cluster = Cluster::new(2)
        .with_limits(Limits {
            max_memory: 512 << 20,
            ..Limits::default()
        })
        .with_anti_entropy(Duration::from_millis(500));
    let mut nodes = Vec::new();
    for ordinal in 0..3 {
        nodes.push(cluster.start(ordinal, 0).await);
    }
    cluster.publish(&nodes);
    for node in &nodes {
        node.ready().await;
    }
    let mut client = CacheClient::new(nodes[0].channel());
    for start in (0..KEYS).step_by(1_000) {
        let items = (start..start + 1_000)
            .map(|i| SetRequest {
                key: key(i),
                value: vec![b'v'; 1_024].into(),
                ..SetRequest::default()
            })
            .collect();
        let results = client
            .multi_set(MultiSetRequest { items })
            .await
            .unwrap()
            .into_inner()
            .results;
        let failed: Vec<_> = results.iter().filter(|r| !r.stored).take(3).collect();
        assert!(failed.is_empty(), "{failed:?}");
    }

    // Scale 3 → 4, and 4 → 5 while the members are handing off for the first change:
    // they start 250 ms (SETTLE) after they see it, and a pass over 20 MB takes longer
    // than the 100 ms after that.
    nodes.push(cluster.start(3, 0).await);
    nodes[3].ready().await;
    let passes = nodes[0].handoff_passes().await;
    cluster.publish(&nodes);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let finished_first = nodes[0].handoff_passes().await > passes;
    nodes.push(cluster.start(4, 0).await);
    nodes[4].ready().await;
    cluster.publish(&nodes);
    eprintln!("kcache-0 had finished its first pass when the second change came: {finished_first}");

    // Every key is readable from every member, and on both its owners.
    let view = View::new(nodes.iter().map(Node::member).collect());
    let settled = async {
        loop {
            let mut on_owners = 0;
            for i in (0..KEYS).step_by(97) {
                for owner in view.owners(&key(i), 2) {
                    let node = nodes.iter().find(|n| n.id == owner.id).unwrap();
                    let mut request = tonic::Request::new(GetRequest { key: key(i) });
                    request.metadata_mut().insert(
                        HOP_HEADER,
                        tonic::metadata::MetadataValue::from_static(PROBE),
                    );
                    let mut client = CacheClient::new(node.channel());
                    on_owners += usize::from(client.get(request).await.unwrap().into_inner().found);
                }
            }
            if on_owners == 2 * (0..KEYS).step_by(97).count() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), settled)
        .await
        .expect("sampled keys on both their owners within 60 s");
    for node in &nodes {
        let lost = missing(node).await;
        assert!(
            lost.is_empty(),
            "{} keys lost via {}: {:?}",
            lost.len(),
            node.id,
            &lost[..lost.len().min(10)]
        );
    }
    // Entries handed off are dropped where they are no longer owned.
    let copies = async {
        loop {
            let total: u64 = futures::future::join_all(nodes.iter().map(items))
                .await
                .iter()
                .sum();
            if total == 2 * KEYS {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), copies)
        .await
        .is_err()
    {
        for node in &nodes {
            let owned = (0..KEYS)
                .filter(|&i| view.owners(&key(i), 2).iter().any(|m| m.id == node.id))
                .count();
            eprintln!("{}: holds {}, owns {owned}", node.id, items(node).await);
        }
        panic!("more than two copies of some keys after 30 s");
    }
}
