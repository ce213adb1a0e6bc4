//! A node that drains while the members around it leave: whatever its view, its
//! requests end with an answer or a status that says why, never a reset stream.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use std::sync::Arc;
use std::time::Duration;

use kcache_client::placement::{Member, View};
use kcache_client::proto::{
    MultiGetRequest, MultiSetRequest, SetRequest, cache_client::CacheClient,
};
use kcache_node::cluster::WriteAck;
use kcache_node::server::{Discovery, NodeConfig, serve};
use kcache_node::store::Limits;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::transport::Channel;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_left_without_members_answers_batches_with_a_status() {
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let me = Member {
        id: "a".into(),
        address: grpc.local_addr().unwrap().to_string(),
    };
    let peer = Member {
        id: "b".into(),
        address: common::silent_peer().await,
    };
    let both = View::new(vec![me.clone(), peer.clone()]);
    let (views, _) = watch::channel(Arc::new(both.clone()));
    let (stop, stopped) = oneshot::channel::<()>();
    let config = NodeConfig {
        discovery: Discovery::Watch(views.subscribe()),
        replication: 1,
        write_ack: WriteAck::All,
        drain_timeout: Duration::from_secs(3),
        ..NodeConfig::single("a", Limits::default())
    };
    let node = tokio::spawn(serve(config, grpc, admin, async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{}", me.address))
        .unwrap()
        .connect_lazy();
    let mut client = CacheClient::new(channel);
    // Keys this node owns, so that its drain has entries to hand to the silent peer.
    let keys: Vec<bytes::Bytes> = (0..)
        .map(|i| format!("key-{i}"))
        .filter(|k| both.owners(k.as_bytes(), 1)[0].id == me.id)
        .take(10)
        .map(|k| k.into_bytes().into())
        .collect();
    let items: Vec<SetRequest> = keys
        .iter()
        .map(|k| SetRequest {
            key: k.clone(),
            value: k.clone(),
            ..SetRequest::default()
        })
        .collect();
    client
        .multi_set(MultiSetRequest {
            items: items.clone(),
        })
        .await
        .unwrap();

    // SIGTERM: the node places keys without itself (on the silent peer) and hangs
    // handing off; then the peer leaves too, and its view is empty.
    stop.send(()).unwrap();
    let mut members = client.clone();
    let mut placed_on = async |n: usize| loop {
        let topology = members
            .topology(kcache_client::proto::TopologyRequest {})
            .await
            .unwrap()
            .into_inner();
        if topology.members.len() == n {
            return;
        }
        tokio::task::yield_now().await;
    };
    tokio::time::timeout(Duration::from_secs(2), placed_on(1))
        .await
        .expect("the node drains: it places keys on the peer alone");
    views.send_replace(Arc::new(View::new(vec![me.clone()])));
    tokio::time::timeout(Duration::from_secs(2), placed_on(0))
        .await
        .expect("the draining node's view empties");

    // Keys placed on nobody: UNAVAILABLE, saying why (not a reset stream, and not a
    // refused connection: the node is still draining).
    let read = client
        .multi_get(MultiGetRequest { keys: keys.clone() })
        .await
        .unwrap_err();
    assert_eq!(read.code(), tonic::Code::Unavailable, "{read:?}");
    assert!(read.message().contains("no member is left"), "{read:?}");
    let written = client
        .multi_set(MultiSetRequest { items })
        .await
        .unwrap_err();
    assert_eq!(written.code(), tonic::Code::Unavailable, "{written:?}");
    assert!(
        written.message().contains("no member is left"),
        "{written:?}"
    );
    node.await.unwrap().unwrap();
}
