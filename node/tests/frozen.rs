//! A frozen peer (it accepts connections and never answers, as a SIGSTOPped process
//! does) holds up no node for long: handoffs to it give up when the next membership
//! change comes, and that change is handed off. Without a next change, a handoff a
//! peer keeps refusing is retried until the peer takes it.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{Cluster, Node};
use kcache_client::placement::{Member, View};
use kcache_client::proto::{
    MultiSetRequest, ReplicateRequest, ReplicateResponse, SetRequest, StatsRequest,
    cache_client::CacheClient,
};
use parking_lot::Mutex;
use prost::Message;
use tokio::net::TcpListener;

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

/// A peer that refuses its first `refusals` Replicate and Handoff calls (UNAVAILABLE,
/// as a peer cut off or restarting looks), then takes them, recording the keys.
async fn refusing_peer(refusals: usize) -> (String, Arc<Mutex<BTreeSet<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let keys = Arc::new(Mutex::new(BTreeSet::new()));
    let (held, refused) = (keys.clone(), Arc::new(Mutex::new(0)));
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (held, refused) = (held.clone(), refused.clone());
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(tcp).await.unwrap();
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    let (held, refused) = (held.clone(), refused.clone());
                    tokio::spawn(async move {
                        let path = request.uri().path().to_owned();
                        let takes = path.ends_with("/Replicate") || path.ends_with("/Handoff");
                        let refuse = takes && {
                            let mut refused = refused.lock();
                            *refused += 1;
                            *refused <= refusals
                        };
                        let status = match (takes, refuse) {
                            (true, true) => "14", // UNAVAILABLE
                            (false, _) => "12",   // UNIMPLEMENTED
                            (true, false) => "0",
                        };
                        let headers = |status: &str| {
                            http::Response::builder()
                                .header("content-type", "application/grpc")
                                .header("grpc-status", status)
                                .body(())
                                .unwrap()
                        };
                        if status != "0" {
                            let _ = respond.send_response(headers(status), true);
                            return;
                        }
                        // gRPC frames: a flag byte, a 4-byte length, the message.
                        let mut body = request.into_body();
                        let mut bytes = Vec::new();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            bytes.extend_from_slice(&chunk);
                        }
                        let mut received = 0;
                        let mut rest = &bytes[..];
                        while rest.len() >= 5 {
                            let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
                            let message = ReplicateRequest::decode(&rest[5..5 + len]).unwrap();
                            rest = &rest[5 + len..];
                            for entry in message.entries {
                                received += 1;
                                held.lock()
                                    .insert(String::from_utf8(entry.key.to_vec()).unwrap());
                            }
                        }
                        let reply = ReplicateResponse {
                            received,
                            applied: received,
                        }
                        .encode_to_vec();
                        let mut frame = vec![0];
                        frame.extend_from_slice(&(reply.len() as u32).to_be_bytes());
                        frame.extend_from_slice(&reply);
                        let mut response = http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        *response.status_mut() = http::StatusCode::OK;
                        let Ok(mut stream) = respond.send_response(response, false) else {
                            return;
                        };
                        let _ = stream.send_data(frame.into(), false);
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        let _ = stream.send_trailers(trailers);
                    });
                }
            });
        }
    });
    (address, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_a_peer_keeps_refusing_is_retried_until_it_takes_it() {
    let cluster = Cluster::new(1);
    // Alone, a places keys on itself without a published view; publishing one would
    // be a change of its own, and one that comes while the joiner's is handed off
    // would start a second pass, a retry this test must not get for free.
    let a = cluster.start(0, 0).await;
    a.ready().await;
    let n = 500u64;
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
    // A member joins that refuses as many calls as a pass used to be attempted.
    let (address, received) = refusing_peer(5).await;
    let joiner = Member {
        id: "kcache-9".into(),
        address,
    };
    let view = View::new(vec![a.member(), joiner.clone()]);
    let share: BTreeSet<String> = (0..n)
        .map(|i| format!("key-{i}"))
        .filter(|k| view.owners(k.as_bytes(), 1)[0].id == joiner.id)
        .collect();
    cluster.views.send_replace(Arc::new(view));
    let handed = async {
        loop {
            if *received.lock() == share {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), handed)
        .await
        .expect("the joiner gets its share once it takes handoffs, with no further change");
    cluster.publish(&[]);
    a.stop().await;
}
