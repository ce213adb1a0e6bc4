//! Handoff and sync move whole stores between nodes: values far larger than the
//! small ones batches are sized for must move too, within the peers' message limits.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use common::cluster::{Cluster, Node};
use kcache_client::placement::View;
use kcache_client::proto::{GetRequest, SetRequest, StatsRequest, cache_client::CacheClient};
use kcache_node::store::Limits;

/// 64 KiB: a thousand of them are four times the 16 MiB a peer accepts in one message.
const VALUE: usize = 64 << 10;

fn key(i: u64) -> String {
    format!("big-{i:04}")
}

fn value(i: u64) -> Vec<u8> {
    let mut value = vec![b'x'; VALUE];
    value[..8].copy_from_slice(&i.to_be_bytes());
    value
}

async fn write(node: &Node, n: u64) {
    let mut client = CacheClient::new(node.channel());
    for i in 0..n {
        client
            .set(SetRequest {
                key: key(i).into_bytes().into(),
                value: value(i).into(),
                ..SetRequest::default()
            })
            .await
            .unwrap();
    }
}

async fn readable(node: &Node, n: u64) -> u64 {
    let mut client = CacheClient::new(node.channel());
    let mut found = 0;
    for i in 0..n {
        let reply = client
            .get(GetRequest {
                key: key(i).into_bytes().into(),
            })
            .await
            .unwrap()
            .into_inner();
        found += u64::from(reply.found && reply.value.as_ref() == value(i));
    }
    found
}

fn big_limits() -> Limits {
    Limits {
        max_memory: 256 << 20,
        ..Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_hands_off_more_large_values_than_one_peer_message_holds() {
    let cluster = Cluster::new(1)
        .with_limits(big_limits())
        .with_drain_timeout(std::time::Duration::from_secs(5));
    let mut nodes = vec![cluster.start(0, 0).await, cluster.start(1, 0).await];
    for node in &nodes {
        node.ready().await;
    }
    cluster.publish(&nodes);
    let n = 800; // about 25 MiB on each node
    write(&nodes[0], n).await;
    let leaving = nodes.pop().unwrap();
    cluster.publish(&nodes);
    leaving.stop().await;
    assert_eq!(
        readable(&nodes[0], n).await,
        n,
        "keys readable after the drain"
    );
    cluster.publish(&[]);
    futures::future::join_all(nodes.into_iter().map(Node::stop)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_syncs_more_large_values_than_one_peer_message_holds() {
    let cluster = Cluster::new(2).with_limits(big_limits());
    let mut nodes = vec![cluster.start(0, 0).await, cluster.start(1, 0).await];
    for node in &nodes {
        node.ready().await;
    }
    cluster.publish(&nodes);
    let n = 300; // two copies: about 19 MiB on each node
    write(&nodes[0], n).await;
    let leaving = nodes.pop().unwrap();
    cluster.publish(&nodes);
    leaving.stop().await;
    let successor = cluster.start(1, 1).await;
    successor.ready().await;
    let joined = View::new(vec![nodes[0].member(), successor.member()]);
    assert!((0..n).all(|i| joined.owners(key(i).as_bytes(), 2).len() == 2));
    let stats = CacheClient::new(successor.channel())
        .stats(StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    let held = stats
        .nodes
        .iter()
        .find(|s| s.node_id == successor.id)
        .unwrap()
        .items;
    assert_eq!(held, n, "entries held when ready");
    nodes.push(successor);
    cluster.publish(&[]);
    futures::future::join_all(nodes.into_iter().map(Node::stop)).await;
}
