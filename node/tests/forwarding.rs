//! What a node does when the owner it forwards to fails: a write the owner may have
//! applied must not be applied again elsewhere.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kcache_client::placement::{Member, View};
use kcache_client::proto::{GetRequest, MultiGetRequest, SetRequest};
use kcache_client::{Client, ConnectOptions, Connection, Ttl, proto::cache_client::CacheClient};
use kcache_node::server::{Discovery, NodeConfig, serve};
use kcache_node::service::HOP_HEADER;
use kcache_node::store::Limits;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// An "owner" that answers every gRPC call with a trailers-only `status`, counting
/// the calls to `counted` (a starting node also asks its peers for a Sync).
async fn failing_owner(status: u8, counted: &'static str, calls: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let calls = calls.clone();
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(tcp).await.unwrap();
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    if request.uri().path() == counted {
                        calls.fetch_add(1, Ordering::SeqCst);
                    }
                    let response = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .header("grpc-status", status.to_string())
                        .header("grpc-message", "owner says no")
                        .body(())
                        .unwrap();
                    let _ = respond.send_response(response, true);
                }
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_owner_timed_out_is_not_applied_again_here() {
    let calls = Arc::new(AtomicUsize::new(0));
    // 4 = DEADLINE_EXCEEDED: the owner may have applied the increment before it ran
    // out of time.
    let owner = failing_owner(4, "/kcache.v1.Cache/Increment", calls.clone()).await;
    not_applied_again(owner, Some(calls)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_owner_never_answers_is_not_applied_again_here() {
    // The node's own deadline on the owner runs out (tonic reports that as
    // CANCELLED, which the client must not see).
    not_applied_again(common::silent_peer().await, None).await;
}

/// Increments a key whose primary is `owner` through a second owner: the client gets
/// a timeout, the owner got the call once, and the second owner did not apply it.
async fn not_applied_again(owner: String, calls: Option<Arc<AtomicUsize>>) {
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let here = grpc.local_addr().unwrap().to_string();
    let members = vec![
        Member {
            id: "a".into(),
            address: here.clone(),
        },
        Member {
            id: "b".into(),
            address: owner,
        },
    ];
    // A key whose primary owner is b, with this node (a) its second owner.
    let view = View::new(members.clone());
    let key = (0..)
        .map(|i| format!("counter-{i}"))
        .find(|k| view.owners(k.as_bytes(), 2)[0].id == "b")
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let config = NodeConfig {
        discovery: Discovery::Static(members),
        replication: 2,
        ..NodeConfig::single("a", Limits::default())
    };
    let node = tokio::spawn(serve(config, grpc, admin, async {
        let _ = stopped.await;
    }));

    // Longer than the node's deadline on its peers, so the timeout is the node's.
    let client = Client::builder(here.clone())
        .retries(0)
        .timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let result = client.incr(key.clone(), 1, 0, Ttl::Never).await;
    // DEADLINE_EXCEEDED, which the client reports as a timeout: the write may have
    // been applied.
    assert!(
        matches!(result, Err(kcache_client::Error::Timeout(_))),
        "{result:?}"
    );
    if let Some(calls) = calls {
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "forwarded once to the owner"
        );
    }

    // Read this node's own copy (the hop header keeps it from forwarding): the
    // increment was not applied here behind the owner's back.
    let mut raw = CacheClient::new(Connection::new(&here, ConnectOptions::default()));
    let mut request = tonic::Request::new(GetRequest {
        key: key.clone().into(),
    });
    request
        .metadata_mut()
        .insert(HOP_HEADER, tonic::metadata::MetadataValue::from_static("1"));
    let local = raw.get(request).await.unwrap().into_inner();
    assert!(
        !local.found,
        "the increment was applied on the second owner too"
    );

    let _ = stop.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_its_owner_applied_is_not_reported_failed_because_a_replica_hangs() {
    // f forwards to p, the key's primary, which copies it to s, a replica that never
    // answers: p applied the increment, so f must not report it failed (a client
    // would retry it and count twice).
    let mut listeners = Vec::new();
    let mut members = Vec::new();
    for id in ["f", "p"] {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        members.push(Member {
            id: id.into(),
            address: grpc.local_addr().unwrap().to_string(),
        });
        listeners.push((id, grpc, admin));
    }
    members.push(Member {
        id: "s".into(),
        address: common::silent_peer().await,
    });
    let view = View::new(members.clone());
    let key = (0..)
        .map(|i| format!("counter-{i}"))
        .find(|k| {
            let owners = view.owners(k.as_bytes(), 2);
            owners[0].id == "p" && owners[1].id == "s"
        })
        .unwrap();
    for (id, grpc, admin) in listeners {
        let config = NodeConfig {
            discovery: Discovery::Static(members.clone()),
            replication: 2,
            ..NodeConfig::single(id, Limits::default())
        };
        tokio::spawn(serve(config, grpc, admin, std::future::pending()));
    }
    let client = Client::builder(members[0].address.clone())
        .retries(0)
        .connect()
        .await
        .unwrap();
    let counted = client.incr(key.clone(), 1, 0, Ttl::Never).await.unwrap();
    assert_eq!(counted.0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_get_goes_to_an_owner_not_suspect_first() {
    // a, the node asked, owns none of the keys; b, their primary, refuses every call
    // (and so is suspect after one); c, their replica, holds them.
    let multi_gets = Arc::new(AtomicUsize::new(0));
    let b = failing_owner(14, "/kcache.v1.Cache/MultiGet", multi_gets.clone()).await;
    let mut listeners = Vec::new();
    let mut members = Vec::new();
    for id in ["a", "c"] {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        members.push(Member {
            id: id.into(),
            address: grpc.local_addr().unwrap().to_string(),
        });
        listeners.push((id, grpc, admin));
    }
    members.push(Member {
        id: "b".into(),
        address: b,
    });
    let view = View::new(members.clone());
    let keys: Vec<String> = (0..)
        .map(|i| format!("k-{i}"))
        .filter(|k| {
            let owners = view.owners(k.as_bytes(), 2);
            owners[0].id == "b" && owners[1].id == "c"
        })
        .take(20)
        .collect();
    for (id, grpc, admin) in listeners {
        let config = NodeConfig {
            discovery: Discovery::Static(members.clone()),
            replication: 2,
            ..NodeConfig::single(id, Limits::default())
        };
        tokio::spawn(serve(config, grpc, admin, std::future::pending()));
    }
    // Straight into c's store (the hop header: no forwarding, no replication).
    let mut c = CacheClient::new(Connection::new(
        &members[1].address,
        ConnectOptions::default(),
    ));
    for key in &keys {
        let mut request = tonic::Request::new(SetRequest {
            key: key.clone().into(),
            value: key.clone().into(),
            ..SetRequest::default()
        });
        request
            .metadata_mut()
            .insert(HOP_HEADER, tonic::metadata::MetadataValue::from_static("1"));
        c.set(request).await.unwrap();
    }
    let mut a = CacheClient::new(Connection::new(
        &members[0].address,
        ConnectOptions::default(),
    ));
    // One read that b refuses makes it suspect; c answers it.
    let first = a
        .get(GetRequest {
            key: keys[0].clone().into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(first.found);
    let values = a
        .multi_get(MultiGetRequest {
            keys: keys.iter().map(|k| k.clone().into()).collect(),
        })
        .await
        .unwrap()
        .into_inner()
        .values;
    let found: Vec<&[u8]> = values.iter().map(|v| v.value.as_ref()).collect();
    let expected: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
    assert_eq!(found, expected);
    assert_eq!(
        multi_gets.load(Ordering::SeqCst),
        0,
        "the batch went to the suspect primary first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_a_forwarded_call_timed_out_on_is_not_used_again() {
    // b owns every key and never answers (a frozen node, or one whose connection is
    // stuck behind TCP retransmissions after a partition healed): after a call times
    // out on a connection, the next call dials a new one.
    let accepted = Arc::new(AtomicUsize::new(0));
    let b = common::silent_peer_counting(accepted.clone()).await;
    let (here, view) = common::node_beside(b, NodeConfig::single("a", Limits::default())).await;
    let key = (0..)
        .map(|i| format!("k-{i}"))
        .find(|k| view.owners(k.as_bytes(), 1)[0].id == "b")
        .unwrap();
    let mut a = CacheClient::new(Connection::new(&here, ConnectOptions::default()));
    for _ in 0..2 {
        let status = a
            .get(GetRequest {
                key: key.clone().into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    }
    // One connection would carry every call (and the joining node's Sync) for good.
    let connections = accepted.load(Ordering::SeqCst);
    assert!(
        connections >= 2,
        "{connections} connection(s) for two timed-out reads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_refusing_this_nodes_credentials_is_not_the_callers_unauthenticated() {
    // b owns every key and refuses a's token or certificate (16 = UNAUTHENTICATED): an
    // expired peer certificate, or a token rotated on b only. The caller's own
    // credentials were fine, so it must not be told to authenticate.
    let calls = Arc::new(AtomicUsize::new(0));
    let b = failing_owner(16, "/kcache.v1.Cache/Get", calls.clone()).await;
    let (here, view) = common::node_beside(b, NodeConfig::single("a", Limits::default())).await;
    let key = (0..)
        .map(|i| format!("k-{i}"))
        .find(|k| view.owners(k.as_bytes(), 1)[0].id == "b")
        .unwrap();
    let mut a = CacheClient::new(Connection::new(&here, ConnectOptions::default()));
    let status = a.get(GetRequest { key: key.into() }).await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "b was asked once");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    assert!(
        status.message().contains("refused this node's credentials"),
        "{status}"
    );
}
