//! A rolling restart as a StatefulSet does it, with in-process nodes whose membership
//! the test publishes as the EndpointSlice controller would: pods are replaced one at a
//! time from the highest ordinal; each leaves the membership, drains and stops; its
//! successor starts with the same id at a new address, is published once its gRPC
//! health says SERVING (the readiness probe), and the next pod goes at once. Writes
//! never stop; with two copies of each key none of the acknowledged ones may be missing
//! when the rollout ends.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::cluster::{Cluster, Node};
use kcache_client::placement::View;
use kcache_client::proto::{
    MultiGetRequest, MultiSetRequest, SetRequest, StatsRequest, TopologyRequest,
    cache_client::CacheClient,
};
use parking_lot::Mutex;
use tokio::sync::watch;
use tonic::transport::Channel;

/// Writes the writer acknowledges between a pod's readiness and its endpoint turning
/// ready: the readiness probe's period, counted in writes rather than slept.
const PROBE_LAG_WRITES: usize = 300;

fn key(i: u64) -> String {
    format!("key-{i:06}")
}

/// Writes key(i) = key(i) for i = from, from + 1, … through the published members in
/// turn until stopped; counts acknowledgements on `acked`.
fn writer(
    targets: Arc<Mutex<Vec<SocketAddr>>>,
    running: Arc<AtomicBool>,
    acked: watch::Sender<usize>,
    from: u64,
) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        let mut i = from;
        while running.load(Ordering::Relaxed) {
            let addr = {
                let targets = targets.lock();
                targets[i as usize % targets.len()]
            };
            let mut client = CacheClient::new(
                Channel::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect_lazy(),
            );
            let request = SetRequest {
                key: key(i).into_bytes().into(),
                value: key(i).into_bytes().into(),
                ..SetRequest::default()
            };
            if client
                .set(request)
                .await
                .is_ok_and(|r| r.into_inner().stored)
            {
                acknowledged.push(i);
                acked.send_modify(|n| *n += 1);
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        acknowledged
    })
}

/// Writes key(i) = key(i) for i in 0..n through `node`, in batches small enough that
/// a forwarded part is coordinated within the peer deadline on a busy machine.
async fn preload(node: &Node, n: u64) {
    let mut client = CacheClient::new(node.channel());
    for start in (0..n).step_by(50) {
        let items = (start..n.min(start + 50))
            .map(|i| SetRequest {
                key: key(i).into_bytes().into(),
                value: key(i).into_bytes().into(),
                ..SetRequest::default()
            })
            .collect();
        let reply = client
            .multi_set(MultiSetRequest { items })
            .await
            .unwrap()
            .into_inner();
        assert!(reply.results.iter().all(|r| r.stored));
    }
}

/// Three nodes, published and agreed on, with `n` keys.
async fn three_nodes(cluster: &Cluster, n: u64) -> Vec<Node> {
    let mut nodes = Vec::new();
    for ordinal in 0..3 {
        nodes.push(cluster.start(ordinal, 0).await);
    }
    for node in &nodes {
        node.ready().await;
    }
    cluster.publish(&nodes);
    agreed(&nodes).await;
    preload(&nodes[0], n).await;
    nodes
}

/// The keys of `keys` that do not read back with their value through `node`.
async fn missing(node: &Node, keys: &[u64]) -> Vec<u64> {
    let mut client = CacheClient::new(node.channel());
    let mut missing = Vec::new();
    for chunk in keys.chunks(500) {
        let values = client
            .multi_get(MultiGetRequest {
                keys: chunk.iter().map(|&i| key(i).into_bytes().into()).collect(),
            })
            .await
            .unwrap()
            .into_inner()
            .values;
        for (&i, value) in chunk.iter().zip(values) {
            if !value.found || value.value.as_ref() != key(i).as_bytes() {
                missing.push(i);
            }
        }
    }
    missing
}

/// Waits until every node places keys on exactly `nodes`' members.
async fn agreed(nodes: &[Node]) {
    let expected = View::new(nodes.iter().map(Node::member).collect()).epoch();
    for node in nodes {
        let mut client = CacheClient::new(node.channel());
        let topology = client
            .topology(TopologyRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(topology.epoch, expected, "{} disagrees", node.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_to_new_addresses_loses_no_acknowledged_key_with_two_copies() {
    let cluster = Cluster::new(2);
    let preloaded = 3_000u64;
    let mut nodes = three_nodes(&cluster, preloaded).await;

    let running = Arc::new(AtomicBool::new(true));
    let (acked_tx, mut acked) = watch::channel(0usize);
    let writes = writer(
        cluster.targets.clone(),
        running.clone(),
        acked_tx,
        preloaded,
    );
    for ordinal in (0..3u8).rev() {
        // The pod is deleted: its endpoint turns unready, then it gets SIGTERM.
        let at = nodes
            .iter()
            .position(|n| n.id == format!("kcache-{ordinal}"));
        let leaving = nodes.remove(at.unwrap());
        cluster.publish(&nodes);
        leaving.stop().await;
        // Its successor: same name, new IP; an endpoint once the probe sees it ready.
        let successor = cluster.start(ordinal, 1).await;
        successor.ready().await;
        let seen = *acked.borrow_and_update();
        acked
            .wait_for(|&n| n >= seen + PROBE_LAG_WRITES)
            .await
            .unwrap();
        nodes.push(successor);
        cluster.publish(&nodes);
        agreed(&nodes).await;
    }
    running.store(false, Ordering::Relaxed);
    let mut acknowledged = writes.await.unwrap();
    acknowledged.extend(0..preloaded);
    for node in &nodes {
        let lost = missing(node, &acknowledged).await;
        assert!(
            lost.is_empty(),
            "via {}: {} of {} acknowledged keys missing, e.g. {:?}",
            node.id,
            lost.len(),
            acknowledged.len(),
            &lost[..lost.len().min(5)]
        );
    }
    cluster.publish(&[]);
    futures::future::join_all(nodes.into_iter().map(Node::stop)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_turns_ready_only_once_it_holds_every_key_it_will_own() {
    let cluster = Cluster::new(2);
    let n = 3_000u64;
    let mut nodes = three_nodes(&cluster, n).await;
    let leaving = nodes.pop().unwrap();
    cluster.publish(&nodes);
    leaving.stop().await;
    let successor = cluster.start(2, 1).await;
    successor.ready().await;
    // Ready, and not yet an endpoint: it already holds its share of the keys.
    let joined = View::new(nodes.iter().chain([&successor]).map(Node::member).collect());
    let owned = (0..n)
        .filter(|&i| {
            joined
                .owners(key(i).as_bytes(), 2)
                .iter()
                .any(|m| m.id == successor.id)
        })
        .count() as u64;
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
    assert_eq!(held, owned, "entries held when ready, of {n}");
    nodes.push(successor);
    cluster.publish(&[]);
    futures::future::join_all(nodes.into_iter().map(Node::stop)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_and_an_if_absent_on_a_node_that_just_joined_see_the_key_it_has_not_received() {
    use kcache_client::proto::{IncrementRequest, SetCondition};
    let cluster = Cluster::new(1);
    let mut nodes = vec![cluster.start(0, 0).await, cluster.start(1, 0).await];
    for node in &nodes {
        node.ready().await;
    }
    cluster.publish(&nodes);
    agreed(&nodes).await;
    // The joining node syncs and turns ready; then, before it is a member, a counter
    // and a key it will own are written on their current owners.
    let joining = cluster.start(2, 0).await;
    joining.ready().await;
    let after = View::new(nodes.iter().chain([&joining]).map(Node::member).collect());
    let moving = |name: &str| {
        (0..)
            .map(|i| format!("{name}-{i}"))
            .find(|k| after.owners(k.as_bytes(), 1)[0].id == joining.id)
            .unwrap()
    };
    let (counter, claimed) = (moving("counter"), moving("claimed"));
    let mut old = CacheClient::new(nodes[0].channel());
    let increment = |key: &str| IncrementRequest {
        key: key.as_bytes().to_vec().into(),
        delta: 1,
        ..IncrementRequest::default()
    };
    for _ in 0..5 {
        old.increment(increment(&counter)).await.unwrap();
    }
    let claim = |value: &str| SetRequest {
        key: claimed.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        condition: SetCondition::IfAbsent as i32,
        ..SetRequest::default()
    };
    assert!(old.set(claim("first")).await.unwrap().into_inner().stored);
    // It becomes a member and owns both keys before any handoff reaches it.
    nodes.push(joining);
    cluster.publish(&nodes);
    agreed(&nodes).await;
    let mut new = CacheClient::new(nodes[2].channel());
    let counted = new.increment(increment(&counter)).await.unwrap();
    assert_eq!(counted.into_inner().value, 6, "the counter went on from 5");
    let second = new.set(claim("second")).await.unwrap().into_inner();
    assert!(!second.stored, "IfAbsent succeeded twice");
    cluster.publish(&[]);
    futures::future::join_all(nodes.into_iter().map(Node::stop)).await;
}
