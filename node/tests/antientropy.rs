//! Anti-entropy: a replica that missed writes and deletes while the member set stayed
//! the same (its peer could not reach it for a while) converges with the primary, and
//! a delete it missed is not brought back the other way.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::cluster::{Cluster, Node};
use futures::StreamExt as _;
use kcache_client::placement::{Member, View};
use kcache_client::proto::{DeleteRequest, GetRequest, SetRequest, cache_client::CacheClient};
use kcache_node::service::{HOP_HEADER, PROBE};
use kcache_node::store::Limits;
use tokio::sync::watch;

/// `key` as `node` holds it in its own store: (value, version), or `None`.
async fn held(node: &Node, key: &str) -> Option<(Vec<u8>, u64)> {
    let mut request = tonic::Request::new(GetRequest {
        key: key.as_bytes().to_vec().into(),
    });
    request.metadata_mut().insert(
        HOP_HEADER,
        tonic::metadata::MetadataValue::from_static(PROBE),
    );
    let reply = CacheClient::new(node.channel())
        .get(request)
        .await
        .unwrap()
        .into_inner();
    reply.found.then(|| (reply.value.to_vec(), reply.version))
}

async fn metric(node: &Node, name: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(node.admin).await.unwrap();
    let request = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_missed_writes_and_deletes_converges_without_a_member_change() {
    let cluster = Cluster::new(2).with_anti_entropy(Duration::from_millis(200));
    // B first, so that A starts already seeing B: A's placement then includes B from
    // its start, and no handoff of A's ever counts B a new owner (a handoff, not
    // anti-entropy, would then bring B everything).
    let (to_b, b_views) = watch::channel(Arc::new(View::default()));
    let b = cluster.start_watching(1, 0, b_views).await;
    let (to_a, a_views) = watch::channel(Arc::new(View::new(vec![b.member()])));
    let a = cluster.start_watching(0, 0, a_views).await;
    let both = Arc::new(View::new(vec![a.member(), b.member()]));
    to_a.send_replace(both.clone());
    to_b.send_replace(both.clone());
    a.ready().await;
    b.ready().await;
    // Keys A coordinates, so A writes them even when it cannot reach B.
    let keys: Vec<String> = (0..)
        .map(|i| format!("ae-{i:03}"))
        .filter(|k| both.owners(k.as_bytes(), 2)[0].id == a.id)
        .take(60)
        .collect();
    let key = |i: usize| keys[i].clone();

    let mut client = CacheClient::new(a.channel());
    let set = move |i: usize, value: &str| SetRequest {
        key: key(i).into_bytes().into(),
        value: value.as_bytes().to_vec().into(),
        ..SetRequest::default()
    };
    for i in 0..40 {
        client.set(set(i, "first")).await.unwrap();
    }
    for i in 0..40 {
        assert!(
            held(&b, &key(i)).await.is_some(),
            "replicated before the fault"
        );
    }

    // A can no longer reach B: B is still a member, at an address that never answers.
    // Writes and deletes made now reach A alone.
    let frozen = Member {
        id: b.id.clone(),
        address: common::silent_peer().await,
    };
    to_a.send_replace(Arc::new(View::new(vec![a.member(), frozen])));
    let writes = (20..60).map(|i| {
        let mut client = client.clone();
        async move { client.set(set(i, "second")).await.unwrap() }
    });
    futures::future::join_all(writes).await;
    let deletes = (0..10).map(|i| {
        let mut client = client.clone();
        let request = DeleteRequest {
            key: key(i).into_bytes().into(),
            ..DeleteRequest::default()
        };
        async move { client.delete(request).await.unwrap() }
    });
    futures::future::join_all(deletes).await;
    assert_eq!(
        held(&b, &key(0)).await.unwrap().0,
        b"first",
        "B missed the delete"
    );
    assert_eq!(
        held(&b, &key(30)).await.unwrap().0,
        b"first",
        "B missed the write"
    );
    assert_eq!(held(&b, &key(50)).await, None, "B missed the new key");

    // A reaches B again. The member set is what it was before the fault (same ids,
    // same owners), so no handoff has anything to move: only anti-entropy can repair.
    to_a.send_replace(both.clone());
    let converged = async {
        loop {
            let mut same = true;
            for i in 0..60 {
                same &= held(&a, &key(i)).await == held(&b, &key(i)).await;
            }
            if same {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(40), converged)
        .await
        .expect("the replicas converge within 40 s");
    for i in 0..10 {
        assert_eq!(held(&a, &key(i)).await, None, "{} came back", key(i));
    }
    for i in 10..20 {
        assert_eq!(held(&b, &key(i)).await.unwrap().0, b"first");
    }
    for i in 20..60 {
        assert_eq!(held(&b, &key(i)).await.unwrap().0, b"second");
    }
    assert!(metric(&b, "kcache_anti_entropy_repaired_total").await >= 50);
    assert!(metric(&b, "kcache_anti_entropy_mismatched_buckets_total").await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_forgotten_early_are_not_brought_back_by_the_replica_that_missed_them() {
    // 1 MiB: tombstones may take 64 KiB of it, about 500 of them.
    let limits = Limits {
        max_memory: 1 << 20,
        ..Limits::default()
    };
    let cluster = Cluster::new(2)
        .with_anti_entropy(Duration::from_millis(200))
        .with_limits(limits);
    let (to_b, b_views) = watch::channel(Arc::new(View::default()));
    let b = cluster.start_watching(1, 0, b_views).await;
    let (to_a, a_views) = watch::channel(Arc::new(View::new(vec![b.member()])));
    let a = cluster.start_watching(0, 0, a_views).await;
    let both = Arc::new(View::new(vec![a.member(), b.member()]));
    to_a.send_replace(both.clone());
    to_b.send_replace(both.clone());
    a.ready().await;
    b.ready().await;
    let keys: Vec<String> = (0..)
        .map(|i| format!("gone-{i:03}"))
        .filter(|k| both.owners(k.as_bytes(), 2)[0].id == a.id)
        .take(20)
        .collect();
    let set = |key: &str| SetRequest {
        key: key.as_bytes().to_vec().into(),
        value: b"v".to_vec().into(),
        ..SetRequest::default()
    };
    let client = CacheClient::new(a.channel());
    for key in &keys[..10] {
        client.clone().set(set(key)).await.unwrap();
        assert!(held(&b, key).await.is_some(), "replicated before the fault");
    }

    // B misses the deletes of the first ten keys; then so many other deletes follow
    // that A forgets those ten before their horizon.
    let frozen = Member {
        id: b.id.clone(),
        address: common::silent_peer().await,
    };
    to_a.send_replace(Arc::new(View::new(vec![a.member(), frozen])));
    let delete = |key: String| {
        let mut client = client.clone();
        async move {
            client
                .delete(DeleteRequest {
                    key: key.into_bytes().into(),
                    ..DeleteRequest::default()
                })
                .await
                .unwrap();
        }
    };
    for key in &keys[..10] {
        delete(key.clone()).await;
    }
    // Keys A coordinates, as above: deletes B would coordinate fail while it is away.
    let storm: Vec<String> = (0..)
        .map(|i| format!("storm-{i:05}"))
        .filter(|k| both.owners(k.as_bytes(), 2)[0].id == a.id)
        .take(3_000)
        .collect();
    futures::stream::iter(storm.into_iter().map(delete))
        .buffer_unordered(200)
        .collect::<Vec<()>>()
        .await;
    assert!(metric(&a, "kcache_tombstones_dropped_total").await > 2_000);
    // Written after the storm: newer than anything forgotten, so repaired.
    for key in &keys[10..] {
        client.clone().set(set(key)).await.unwrap();
    }
    assert_eq!(
        held(&b, &keys[0]).await.unwrap().0,
        b"v",
        "B missed the delete"
    );

    // Healed: anti-entropy brings B the later writes, and A none of the deleted keys.
    to_a.send_replace(both.clone());
    let repaired = async {
        loop {
            let mut all = true;
            for key in &keys[10..] {
                all &= held(&b, key).await.is_some();
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(40), repaired)
        .await
        .expect("the writes after the storm reach B within 40 s");
    // More rounds, in both directions, that could copy a deleted key to A.
    let rounds = metric(&a, "kcache_anti_entropy_rounds_total").await;
    let more = async {
        while metric(&a, "kcache_anti_entropy_rounds_total").await < rounds + 3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), more)
        .await
        .expect("three more anti-entropy rounds within 30 s");
    for key in &keys[..10] {
        assert_eq!(held(&a, key).await, None, "{key} came back to A");
    }
    // What the floor cannot do: B, which missed the deletes, still holds and serves
    // those keys until they are written, evicted or expire (README, anti-entropy).
    assert!(held(&b, &keys[0]).await.is_some());
}
