//! A frozen peer (it accepts connections and never answers, as a SIGSTOPped process
//! does) holds up no node for long: handoffs to it give up, and the next membership
//! change is handed off.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use std::time::Duration;

use common::cluster::{Cluster, Node};
use kcache_client::placement::{Member, View};
use kcache_client::proto::{MultiSetRequest, SetRequest, StatsRequest, cache_client::CacheClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_to_a_frozen_peer_does_not_hold_up_the_next_membership_change() {
    let cluster = Cluster::new(1);
    let a = cluster.start(0, 0).await;
    a.ready().await;
    cluster.publish(std::slice::from_ref(&a));
    let n = 1_000u64;
    let items = (0..n)
        .map(|i| SetRequest {
            key: format!("key-{i}").into_bytes().into(),
            value: b"v".to_vec().into(),
            ..SetRequest::default()
        })
        .collect();
    CacheClient::new(a.channel())
        .multi_set(MultiSetRequest { items })
        .await
        .unwrap();
    // A member that never answers joins: a's handoff to it hangs.
    let frozen = Member {
        id: "kcache-9".into(),
        address: common::silent_peer().await,
    };
    cluster
        .views
        .send_replace(std::sync::Arc::new(View::new(vec![a.member(), frozen])));
    // It is replaced by a live one, which must get its share.
    let b = cluster.start(1, 0).await;
    b.ready().await;
    let nodes = vec![a, b];
    cluster.publish(&nodes);
    let view = View::new(nodes.iter().map(Node::member).collect());
    let share = (0..n)
        .filter(|i| view.owners(format!("key-{i}").as_bytes(), 1)[0].id == nodes[1].id)
        .count() as u64;
    let mut client = CacheClient::new(nodes[1].channel());
    let handed = async {
        loop {
            let stats = client.stats(StatsRequest {}).await.unwrap().into_inner();
            let held = stats.nodes.iter().find(|s| s.node_id == nodes[1].id);
            if held.is_some_and(|s| s.items == share) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), handed)
        .await
        .expect("the live member gets its share while the frozen one never answers");
    cluster.publish(&[]);
    futures::future::join_all(nodes.into_iter().map(Node::stop)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_stop_waiting_for_a_replica_that_stopped_answering() {
    // R=2 on two members, but a's view puts b at an address that never answers: the
    // first write waits for the copy until the replication wait runs out, the next
    // ones go on without waiting (their copies still queue, in order).
    let cluster = Cluster::new(2);
    let a = cluster.start(0, 0).await;
    let frozen = Member {
        id: "kcache-1".into(),
        address: common::silent_peer().await,
    };
    let view = View::new(vec![a.member(), frozen]);
    cluster
        .views
        .send_replace(std::sync::Arc::new(view.clone()));
    a.ready().await;
    let keys = (0..)
        .map(|i| format!("w-{i}"))
        .filter(|k| view.owners(k.as_bytes(), 2)[0].id == a.id)
        .take(20);
    let mut client = CacheClient::new(a.channel());
    let mut slow = 0;
    for key in keys {
        let started = std::time::Instant::now();
        client
            .set(SetRequest {
                key: key.into_bytes().into(),
                value: b"v".to_vec().into(),
                ..SetRequest::default()
            })
            .await
            .unwrap();
        // A write that waited for the copy took the replication wait (500 ms).
        slow += usize::from(started.elapsed() >= Duration::from_millis(400));
    }
    assert!(
        slow <= 2,
        "{slow} of 20 writes waited for the frozen replica"
    );
}
