//! What a coordinated write copies to the key's other owners: a write that changed
//! nothing on the primary (a failed condition, a Touch of a key it lacks) must leave
//! the replicas' copies alone, whatever the primary holds; copies land in order; one
//! bad entry does not cost its batch.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kcache_client::placement::{Member, View};
use kcache_client::proto::{
    DeleteRequest, GetRequest, GetResponse, ReplicateRequest, SetCondition, SetRequest,
    TouchRequest, VersionedEntry, cache_client::CacheClient, peer_client::PeerClient,
};
use kcache_node::cluster::WriteAck;
use kcache_node::server::{Discovery, NodeConfig, serve};
use kcache_node::service::{HOP_HEADER, PROBE};
use kcache_node::store::Limits;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Two members of a static cluster with two copies of every key; both serving.
async fn two_nodes() -> Vec<Member> {
    two_nodes_acking(WriteAck::All).await
}

/// As [`two_nodes`], answering writes as `ack` says.
async fn two_nodes_acking(ack: WriteAck) -> Vec<Member> {
    let mut listeners = Vec::new();
    let mut members = Vec::new();
    for id in ["a", "b"] {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        members.push(Member {
            id: id.into(),
            address: grpc.local_addr().unwrap().to_string(),
        });
        listeners.push((id, grpc, admin));
    }
    for (id, grpc, admin) in listeners {
        let config = NodeConfig {
            discovery: Discovery::Static(members.clone()),
            replication: 2,
            write_ack: ack,
            ..NodeConfig::single(id, Limits::default())
        };
        tokio::spawn(serve(config, grpc, admin, std::future::pending()));
    }
    for member in &members {
        let mut health = HealthClient::new(channel(member));
        let request = HealthCheckRequest {
            service: "kcache.v1.Cache".into(),
        };
        let mut statuses = health.watch(request).await.unwrap().into_inner();
        while let Some(status) = statuses.next().await {
            if status.unwrap().status == ServingStatus::Serving as i32 {
                break;
            }
        }
    }
    members
}

fn channel(member: &Member) -> Channel {
    Channel::from_shared(format!("http://{}", member.address))
        .unwrap()
        .connect_lazy()
}

/// What `member` holds for `key`, from its own store (a read-through probe, which
/// looks nowhere else).
async fn held(member: &Member, key: &str) -> GetResponse {
    let mut request = tonic::Request::new(GetRequest {
        key: key.as_bytes().to_vec().into(),
    });
    request.metadata_mut().insert(
        HOP_HEADER,
        tonic::metadata::MetadataValue::from_static(PROBE),
    );
    CacheClient::new(channel(member))
        .get(request)
        .await
        .unwrap()
        .into_inner()
}

/// A key whose primary is `members[0]`, held only by its replica `members[1]` (as
/// when the primary evicted it, or is a new owner the handoff has not reached).
async fn held_by_the_replica_only(members: &[Member], name: &str) -> String {
    let view = View::new(members.to_vec());
    let key = (0..)
        .map(|i| format!("{name}-{i}"))
        .find(|k| view.owners(k.as_bytes(), 2)[0].id == members[0].id)
        .unwrap();
    let entry = VersionedEntry {
        key: key.as_bytes().to_vec().into(),
        value: b"kept".to_vec().into(),
        version: 1,
        ..VersionedEntry::default()
    };
    PeerClient::new(channel(&members[1]))
        .replicate(ReplicateRequest {
            entries: vec![entry],
            from: "test".into(),
        })
        .await
        .unwrap();
    assert!(held(&members[1], &key).await.found);
    assert!(!held(&members[0], &key).await.found);
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_conditional_set_or_a_touch_that_misses_leaves_the_replicas_copy() {
    let members = two_nodes().await;
    let mut primary = CacheClient::new(channel(&members[0]));
    for condition in [SetCondition::IfPresent, SetCondition::IfVersion] {
        let key = held_by_the_replica_only(&members, &format!("{condition:?}")).await;
        let reply = primary
            .set(SetRequest {
                key: key.as_bytes().to_vec().into(),
                value: b"new".to_vec().into(),
                condition: condition as i32,
                version: 42,
                ..SetRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        // The primary may take the key in from the replica first (a handoff may be on
        // its way), and then IfPresent holds; either way the replica keeps a copy.
        let copy = held(&members[1], &key).await;
        assert!(copy.found, "{condition:?} removed the replica's copy");
        let expected: &[u8] = if reply.stored { b"new" } else { b"kept" };
        assert_eq!(copy.value.as_ref(), expected, "{condition:?}");
        assert!(condition == SetCondition::IfPresent || !reply.stored);
    }
    let key = held_by_the_replica_only(&members, "touch").await;
    let reply = primary
        .touch(TouchRequest {
            key: key.as_bytes().to_vec().into(),
            ttl_ms: Some(60_000),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        held(&members[1], &key).await.found,
        "a Touch (found: {}) removed the replica's copy",
        reply.found
    );
    let key = held_by_the_replica_only(&members, "if-version-delete").await;
    let reply = primary
        .delete(DeleteRequest {
            key: key.as_bytes().to_vec().into(),
            if_version: Some(42),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.deleted);
    assert!(
        held(&members[1], &key).await.found,
        "a Delete whose version did not match removed the replica's copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconditional_delete_removes_the_replicas_copy_even_if_the_primary_lacks_it() {
    let members = two_nodes().await;
    let key = held_by_the_replica_only(&members, "delete").await;
    CacheClient::new(channel(&members[0]))
        .delete(DeleteRequest {
            key: key.as_bytes().to_vec().into(),
            if_version: None,
        })
        .await
        .unwrap();
    assert!(!held(&members[1], &key).await.found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_entry_does_not_cost_the_rest_of_its_batch() {
    let members = two_nodes().await;
    let entry = |key: &str, version: u64| VersionedEntry {
        key: key.as_bytes().to_vec().into(),
        value: b"v".to_vec().into(),
        version,
        ..VersionedEntry::default()
    };
    let reply = PeerClient::new(channel(&members[1]))
        .replicate(ReplicateRequest {
            entries: vec![entry("first", 1), entry("bad", u64::MAX), entry("last", 1)],
            from: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((reply.received, reply.applied), (3, 2));
    assert!(held(&members[1], "first").await.found);
    assert!(held(&members[1], "last").await.found);
    assert!(!held(&members[1], "bad").await.found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_that_follows_a_set_is_not_overtaken_by_it_on_the_replica() {
    // With --write-ack one the copies go in the background: the set's copy must not
    // land after the delete's, which would bring the key back on the replica.
    let members = two_nodes_acking(WriteAck::One).await;
    let view = View::new(members.clone());
    let keys: Vec<String> = (0..)
        .map(|i| format!("churn-{i}"))
        .filter(|k| view.owners(k.as_bytes(), 2)[0].id == members[0].id)
        .take(2_000)
        .collect();
    let mut primary = CacheClient::new(channel(&members[0]));
    for key in &keys {
        let key: bytes::Bytes = key.as_bytes().to_vec().into();
        primary
            .set(SetRequest {
                key: key.clone(),
                value: key.clone(),
                ..SetRequest::default()
            })
            .await
            .unwrap();
        primary
            .delete(DeleteRequest {
                key,
                if_version: None,
            })
            .await
            .unwrap();
    }
    // A last write through the same primary: once the replica has it, the copies
    // sent before it have landed.
    primary
        .set(SetRequest {
            key: b"last".to_vec().into(),
            value: b"last".to_vec().into(),
            ..SetRequest::default()
        })
        .await
        .unwrap();
    let replica = if view.owners(b"last", 2)[0].id == members[0].id {
        &members[1]
    } else {
        &members[0]
    };
    let landed = async {
        while !held(replica, "last").await.found {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), landed)
        .await
        .expect("the last copy lands");
    let mut back = Vec::new();
    for key in &keys {
        if held(&members[1], key).await.found {
            back.push(key.clone());
        }
    }
    assert!(
        back.is_empty(),
        "{} of {} deleted keys back on the replica, e.g. {:?}",
        back.len(),
        keys.len(),
        &back[..back.len().min(3)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_a_replication_batch_timed_out_on_is_not_used_again() {
    // a is every test key's primary; b, the replica, never answers (frozen, or its
    // connection stuck behind TCP retransmissions after a partition healed). Once a
    // batch times out, the next one goes on a new connection, as forwarded calls do.
    let accepted = Arc::new(AtomicUsize::new(0));
    let b = common::silent_peer_counting(accepted.clone()).await;
    let config = NodeConfig {
        replication: 2,
        // Copies go in the background, so the sets answer at once.
        write_ack: WriteAck::One,
        // Nothing but replication batches may dial b again.
        anti_entropy: None,
        ..NodeConfig::single("a", Limits::default())
    };
    let (here, view) = common::node_beside(b, config).await;
    let mut keys = (0..)
        .map(|i| format!("k-{i}"))
        .filter(|k| view.owners(k.as_bytes(), 2)[0].id == "a");
    let mut a = CacheClient::new(
        Channel::from_shared(format!("http://{here}"))
            .unwrap()
            .connect_lazy(),
    );
    // A batch times out after a second; one connection would carry every later batch.
    let redialed = async {
        while accepted.load(Ordering::SeqCst) < 2 {
            let key: bytes::Bytes = keys.next().unwrap().into_bytes().into();
            a.set(SetRequest {
                key: key.clone(),
                value: key,
                ..SetRequest::default()
            })
            .await
            .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let waited = tokio::time::timeout(std::time::Duration::from_secs(10), redialed).await;
    let connections = accepted.load(Ordering::SeqCst);
    assert!(
        waited.is_ok(),
        "{connections} connection(s) to the replica after 10 s of timed-out batches"
    );
}
