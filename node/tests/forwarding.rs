//! What a node does when the owner it forwards to fails: a write the owner may have
//! applied must not be applied again elsewhere.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kcache_client::placement::{Member, View};
use kcache_client::proto::GetRequest;
use kcache_client::{Client, ConnectOptions, Connection, Ttl, proto::cache_client::CacheClient};
use kcache_node::server::{Discovery, NodeConfig, serve};
use kcache_node::service::HOP_HEADER;
use kcache_node::store::Limits;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// An "owner" that answers every gRPC call with a trailers-only `status`, counting
/// the Increment calls (a starting node also asks its peers for a Sync).
async fn failing_owner(status: u8, calls: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let calls = calls.clone();
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(tcp).await.unwrap();
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    if request.uri().path() == "/kcache.v1.Cache/Increment" {
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
    let owner = failing_owner(4, calls.clone()).await;
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

    let client = Client::builder(here.clone())
        .retries(0)
        .connect()
        .await
        .unwrap();
    let result = client.incr(key.clone(), 1, 0, Ttl::Never).await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "forwarded once to the owner"
    );

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
