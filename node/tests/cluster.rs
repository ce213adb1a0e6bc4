//! Clusters of in-process nodes on 127.0.0.x whose membership the test changes, as a
//! StatefulSet scale would: scale up and down under traffic, forwarding, fan-out.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kcache_client::placement::{Member, View};
use kcache_client::proto::{
    GetRequest, MultiGetRequest, MultiSetRequest, SetRequest, StatsRequest, TopologyRequest,
    cache_client::CacheClient,
};
use kcache_node::cluster::WriteAck;
use kcache_node::server::{Discovery, NodeConfig, serve};
use kcache_node::store::Limits;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::transport::Channel;

struct Node {
    id: String,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), kcache_node::server::Error>>,
}

impl Node {
    fn member(&self) -> Member {
        Member {
            id: self.id.clone(),
            address: self.addr.to_string(),
        }
    }

    fn client(&self) -> CacheClient<Channel> {
        CacheClient::new(
            Channel::from_shared(format!("http://{}", self.addr))
                .unwrap()
                .connect_lazy(),
        )
    }

    /// SIGTERM: drains, hands off, stops.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the node drains within 30 s")
            .unwrap()
            .unwrap();
    }
}

/// A cluster whose membership the test publishes, like an EndpointSlice would.
struct TestCluster {
    views: watch::Sender<Arc<View>>,
    replication: usize,
}

impl TestCluster {
    fn new(replication: usize) -> Self {
        Self {
            views: watch::Sender::new(Arc::new(View::default())),
            replication,
        }
    }

    async fn start(&self, ordinal: u8) -> Node {
        let id = format!("kcache-{ordinal}");
        let grpc = TcpListener::bind(format!("127.0.0.{}:0", ordinal + 2))
            .await
            .unwrap();
        let admin = TcpListener::bind(format!("127.0.0.{}:0", ordinal + 2))
            .await
            .unwrap();
        let addr = grpc.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let config = NodeConfig {
            discovery: Discovery::Watch(self.views.subscribe()),
            replication: self.replication,
            write_ack: WriteAck::All,
            ..NodeConfig::single(id.clone(), Limits::default())
        };
        let task = tokio::spawn(serve(config, grpc, admin, async {
            let _ = stopped.await;
        }));
        Node {
            id,
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Takes every node out of the membership and stops them all.
    async fn shut_down(&self, nodes: Vec<Node>) {
        self.publish(&[]);
        futures::future::join_all(nodes.into_iter().map(Node::stop)).await;
    }

    fn publish(&self, nodes: &[&Node]) {
        self.views.send_replace(Arc::new(View::new(
            nodes.iter().map(|n| n.member()).collect(),
        )));
    }
}

/// Writes the writer acknowledges between two steps of a scale: enough to cover every
/// moment of a membership change, counted rather than slept.
const WRITES_PER_STEP: usize = 200;

/// Waits until the writer has acknowledged `n` more writes.
async fn more_writes(acked: &mut watch::Receiver<usize>, n: usize) {
    let seen = *acked.borrow_and_update();
    acked.wait_for(|&now| now >= seen + n).await.unwrap();
}

/// Waits until every node places keys on exactly `nodes`' members.
async fn agreed(nodes: &[Node]) {
    let expected = View::new(nodes.iter().map(Node::member).collect()).epoch();
    for node in nodes {
        let topology = node
            .client()
            .topology(TopologyRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(topology.epoch, expected, "{} disagrees", node.id);
    }
}

fn key(i: u64) -> bytes::Bytes {
    format!("key-{i:06}").into_bytes().into()
}

async fn write_batch(client: &mut CacheClient<Channel>, range: std::ops::Range<u64>) {
    let items = range
        .map(|i| SetRequest {
            key: key(i),
            value: format!("value-{i}").into_bytes().into(),
            ..SetRequest::default()
        })
        .collect();
    let results = client
        .multi_set(MultiSetRequest { items })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(results.iter().all(|r| r.stored));
}

/// How many of `keys` read back with their value through `client`.
async fn readable(client: &mut CacheClient<Channel>, keys: &[u64]) -> usize {
    let mut found = 0;
    for chunk in keys.chunks(500) {
        let values = client
            .multi_get(MultiGetRequest {
                keys: chunk.iter().map(|&i| key(i)).collect(),
            })
            .await
            .unwrap()
            .into_inner()
            .values;
        found += chunk
            .iter()
            .zip(values)
            .filter(|(i, v)| v.found && v.value.as_ref() == format!("value-{i}").as_bytes())
            .count();
    }
    found
}

async fn items_per_node(client: &mut CacheClient<Channel>) -> HashMap<String, u64> {
    let stats = client.stats(StatsRequest {}).await.unwrap().into_inner();
    stats
        .nodes
        .into_iter()
        .map(|n| (n.node_id, n.items))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_written_anywhere_reads_back_everywhere_with_two_copies() {
    let cluster = TestCluster::new(2);
    let nodes = [
        cluster.start(0).await,
        cluster.start(1).await,
        cluster.start(2).await,
    ];
    cluster.publish(&nodes.iter().collect::<Vec<_>>());
    agreed(&nodes).await;
    let mut first = nodes[0].client();
    for start in (0..3_000).step_by(500) {
        write_batch(&mut first, start..start + 500).await;
    }
    // A few unary writes and reads through other nodes go through forwarding too.
    let mut second = nodes[1].client();
    for i in 3_000..3_050 {
        second
            .set(SetRequest {
                key: key(i),
                value: format!("value-{i}").into_bytes().into(),
                ..SetRequest::default()
            })
            .await
            .unwrap();
    }
    let all: Vec<u64> = (0..3_050).collect();
    for node in &nodes {
        assert_eq!(
            readable(&mut node.client(), &all).await,
            all.len(),
            "via {}",
            node.id
        );
        let got = node
            .client()
            .get(GetRequest { key: key(7) })
            .await
            .unwrap()
            .into_inner();
        assert!(got.found);
    }
    let items = items_per_node(&mut first).await;
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(
        items.values().sum::<u64>(),
        2 * 3_050,
        "two copies of every key: {items:?}"
    );
    let topology = first
        .topology(TopologyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(topology.members.len(), 3);
    assert_eq!(topology.replication_factor, 2);
    cluster.shut_down(nodes.into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_3_to_5_to_2_under_traffic_keeps_the_keys_and_balances_them() {
    let cluster = TestCluster::new(1);
    let mut nodes = Vec::new();
    for ordinal in 0..3 {
        nodes.push(cluster.start(ordinal).await);
    }
    cluster.publish(&nodes.iter().collect::<Vec<_>>());
    agreed(&nodes).await;
    for start in (0..6_000).step_by(500) {
        write_batch(
            &mut nodes[(start / 500) as usize % 3].client(),
            start..start + 500,
        )
        .await;
    }

    // Continuous writes through whichever nodes are members, as a client that
    // re-resolves the headless Service would.
    let targets: Arc<Mutex<Vec<SocketAddr>>> =
        Arc::new(Mutex::new(nodes.iter().map(|n| n.addr).collect()));
    let running = Arc::new(AtomicBool::new(true));
    let (acked_tx, mut acked) = watch::channel(0usize);
    let writer = tokio::spawn({
        let (targets, running) = (targets.clone(), running.clone());
        async move {
            let mut acknowledged = Vec::new();
            let mut i = 6_000u64;
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
                    key: key(i),
                    value: format!("value-{i}").into_bytes().into(),
                    ..SetRequest::default()
                };
                if client
                    .set(request)
                    .await
                    .is_ok_and(|r| r.into_inner().stored)
                {
                    acknowledged.push(i);
                    acked_tx.send_modify(|n| *n += 1);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            acknowledged
        }
    });

    more_writes(&mut acked, WRITES_PER_STEP).await;
    nodes.push(cluster.start(3).await);
    nodes.push(cluster.start(4).await);
    cluster.publish(&nodes.iter().collect::<Vec<_>>());
    *targets.lock() = nodes.iter().map(|n| n.addr).collect();
    agreed(&nodes).await;
    more_writes(&mut acked, WRITES_PER_STEP).await;

    let items = items_per_node(&mut nodes[0].client()).await;
    assert_eq!(items.len(), 5, "{items:?}");

    // Scale down to 2: the removed members leave the slice and get SIGTERM.
    let leaving: Vec<Node> = nodes.drain(2..).collect();
    cluster.publish(&nodes.iter().collect::<Vec<_>>());
    *targets.lock() = nodes.iter().map(|n| n.addr).collect();
    futures::future::join_all(leaving.into_iter().map(Node::stop)).await;
    agreed(&nodes).await;
    more_writes(&mut acked, WRITES_PER_STEP).await;
    running.store(false, Ordering::Relaxed);
    let mut acknowledged = writer.await.unwrap();
    assert!(
        acknowledged.len() > 100,
        "the writer kept writing: {}",
        acknowledged.len()
    );
    acknowledged.extend(0..6_000);

    let found = readable(&mut nodes[0].client(), &acknowledged).await;
    assert_eq!(
        found,
        acknowledged.len(),
        "acknowledged keys readable after 3->5->2"
    );

    let items = items_per_node(&mut nodes[0].client()).await;
    assert_eq!(items.len(), 2, "{items:?}");
    let mean = items.values().sum::<u64>() as f64 / 2.0;
    for (node, count) in &items {
        let off = (*count as f64 - mean).abs() / mean;
        assert!(off <= 0.15, "{node} holds {count}, mean {mean}: {items:?}");
    }
    cluster.shut_down(nodes).await;
}
