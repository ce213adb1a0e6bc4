//! Deletes and read-modify-writes across membership changes: a copy that missed a
//! delete must not bring the key back, and a member that synced a key before it joined
//! must not increment its old copy. Each node sees the view the test gives it, so the
//! test decides who missed what.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use std::sync::Arc;

use common::cluster::{Cluster, Node};
use kcache_client::placement::{Member, View};
use kcache_client::proto::{
    DeleteRequest, GetRequest, IncrementRequest, SetRequest, TopologyRequest,
    cache_client::CacheClient,
};
use kcache_node::service::{HOP_HEADER, PROBE};
use tokio::sync::watch;

fn view(nodes: &[&Node]) -> Arc<View> {
    Arc::new(View::new(nodes.iter().map(|n| n.member()).collect()))
}

/// Whether `node` holds `key` in its own store (a probe is never forwarded).
async fn holds(node: &Node, key: &str) -> bool {
    let mut request = tonic::Request::new(GetRequest {
        key: key.as_bytes().to_vec().into(),
    });
    request.metadata_mut().insert(
        HOP_HEADER,
        tonic::metadata::MetadataValue::from_static(PROBE),
    );
    let mut client = CacheClient::new(node.channel());
    client.get(request).await.unwrap().into_inner().found
}

/// Waits until `node` has taken in `view` (its topology reports the view's epoch).
async fn sees(node: &Node, view: &View) {
    let mut client = CacheClient::new(node.channel());
    let wait = async {
        loop {
            let topology = client
                .topology(TopologyRequest {})
                .await
                .unwrap()
                .into_inner();
            if topology.epoch == view.epoch() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("{} never saw epoch {}", node.id, view.epoch()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_missed_a_delete_cannot_bring_the_key_back() {
    let cluster = Cluster::new(2);
    let (to_a, a_views) = watch::channel(Arc::new(View::default()));
    let (to_b, b_views) = watch::channel(Arc::new(View::default()));
    let (to_c, c_views) = watch::channel(Arc::new(View::default()));
    let a = cluster.start_watching(0, 0, a_views).await;
    let b = cluster.start_watching(1, 0, b_views).await;
    let both = view(&[&a, &b]);
    to_a.send_replace(both.clone());
    to_b.send_replace(both.clone());
    a.ready().await;
    b.ready().await;
    let c = cluster.start_watching(2, 0, c_views).await;
    let all = view(&[&a, &b, &c]);
    // A key that C will own: both its sync and the handoffs are then in play.
    let key = (0..)
        .map(|i| format!("gone-{i}"))
        .find(|k| all.owners(k.as_bytes(), 2).iter().any(|m| m.id == c.id))
        .unwrap();

    let mut client = CacheClient::new(a.channel());
    client
        .set(SetRequest {
            key: key.clone().into_bytes().into(),
            value: b"old".to_vec().into(),
            ..SetRequest::default()
        })
        .await
        .unwrap();
    assert!(holds(&a, &key).await && holds(&b, &key).await);

    // A loses sight of B, and the delete reaches A alone.
    let alone = view(&[&a]);
    to_a.send_replace(alone.clone());
    sees(&a, &alone).await;
    let deleted = client
        .delete(DeleteRequest {
            key: key.clone().into_bytes().into(),
            ..DeleteRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.deleted);
    assert!(!holds(&a, &key).await);
    assert!(holds(&b, &key).await, "B missed the delete");

    // C joins; everyone sees all three. C syncs from A and B before it turns ready,
    // then A and B hand off for the new placement.
    let (a_passes, b_passes) = (a.handoff_passes().await, b.handoff_passes().await);
    to_c.send_replace(all.clone());
    c.ready().await;
    to_a.send_replace(all.clone());
    to_b.send_replace(all.clone());
    a.handoff_passes_reach(a_passes + 1).await;
    b.handoff_passes_reach(b_passes + 1).await;

    for node in [&a, &b, &c] {
        assert!(
            !holds(node, &key).await,
            "{} holds the deleted key",
            node.id
        );
        let mut client = CacheClient::new(node.channel());
        let reply = client
            .get(GetRequest {
                key: key.clone().into_bytes().into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!reply.found, "a GET at {} found the deleted key", node.id);
    }
    // The nodes end with the runtime: a drain would wait on peers whose views the
    // test no longer updates.
}

/// A key `kcache-1` owns (R=1) once it joins `kcache-0`: owners follow member ids, so
/// it is known before the joiner has an address.
fn joiners_key(prefix: &str) -> String {
    let ids = View::new(
        ["kcache-0", "kcache-1"]
            .map(|id| Member {
                id: id.into(),
                address: String::new(),
            })
            .to_vec(),
    );
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|k| ids.owners(k.as_bytes(), 1)[0].id == "kcache-1")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_increments_the_current_value_not_the_copy_it_synced() {
    let cluster = Cluster::new(1);
    let (to_a, a_views) = watch::channel(Arc::new(View::default()));
    let a = cluster.start_watching(0, 0, a_views).await;
    to_a.send_replace(view(&[&a]));
    a.ready().await;
    let key = joiners_key("counter");
    let increment = |delta| IncrementRequest {
        key: key.clone().into_bytes().into(),
        delta,
        ..IncrementRequest::default()
    };
    let mut at_a = CacheClient::new(a.channel());
    let value = at_a
        .increment(increment(5))
        .await
        .unwrap()
        .into_inner()
        .value;
    assert_eq!(value, 5);

    // As on Kubernetes: J sees the endpoints without itself until it is ready.
    let (to_j, j_views) = watch::channel(view(&[&a]));
    let j = cluster.start_watching(1, 0, j_views).await;
    let both = view(&[&a, &j]);
    // J joins: it syncs the counter (5) before it turns ready, then is an endpoint...
    j.ready().await;
    assert!(holds(&j, &key).await);
    to_j.send_replace(both.clone());
    sees(&j, &both).await;
    // ...and the counter moves on at A, which has not seen J yet.
    at_a.increment(increment(1)).await.unwrap();
    assert_eq!(
        at_a.increment(increment(1))
            .await
            .unwrap()
            .into_inner()
            .value,
        7
    );

    // J is the counter's owner now; its increment goes on from 7, not from its copy.
    let mut at_j = CacheClient::new(j.channel());
    let reply = at_j.increment(increment(1)).await.unwrap().into_inner();
    assert_eq!(reply.value, 8, "the increment started from a stale copy");

    // And when A's handoff reaches J, the count stays.
    let passes = a.handoff_passes().await;
    to_a.send_replace(both);
    a.handoff_passes_reach(passes + 1).await;
    let reply = at_j.increment(increment(0)).await.unwrap().into_inner();
    assert_eq!(reply.value, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_does_not_increment_a_copy_deleted_at_its_previous_owner() {
    let cluster = Cluster::new(1);
    let (to_a, a_views) = watch::channel(Arc::new(View::default()));
    let a = cluster.start_watching(0, 0, a_views).await;
    to_a.send_replace(view(&[&a]));
    a.ready().await;
    let key = joiners_key("deleted-counter");
    let increment = |delta| IncrementRequest {
        key: key.clone().into_bytes().into(),
        delta,
        ..IncrementRequest::default()
    };
    let mut at_a = CacheClient::new(a.channel());
    at_a.increment(increment(5)).await.unwrap();

    // J syncs the counter (5), then A, which has not seen J yet, deletes it.
    let (to_j, j_views) = watch::channel(view(&[&a]));
    let j = cluster.start_watching(1, 0, j_views).await;
    j.ready().await;
    assert!(holds(&j, &key).await);
    let both = view(&[&a, &j]);
    to_j.send_replace(both.clone());
    sees(&j, &both).await;
    let deleted = at_a
        .delete(DeleteRequest {
            key: key.clone().into_bytes().into(),
            ..DeleteRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.deleted);

    // J owns the counter now: its increment starts from nothing, not from its copy.
    let mut at_j = CacheClient::new(j.channel());
    let reply = at_j.increment(increment(1)).await.unwrap().into_inner();
    assert_eq!(reply.value, 1, "the increment revived a deleted copy");
    // A's handoff brings the tombstone, which the newer counter outlives.
    let passes = a.handoff_passes().await;
    to_a.send_replace(both);
    a.handoff_passes_reach(passes + 1).await;
    assert_eq!(
        at_j.increment(increment(0))
            .await
            .unwrap()
            .into_inner()
            .value,
        1
    );
}
