//! Every RPC of kcache.v1.Cache and every bad-input case, over a real socket.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use std::time::Duration;

use common::TestNode;
use kcache_client::proto::{
    Command, DeleteRequest, GetRequest, IncrementRequest, MultiGetRequest, MultiSetRequest,
    SetCondition, SetRequest, StatsRequest, TopologyRequest, TouchRequest, command, reply,
};
use kcache_node::store::Limits;
use tonic::Code;

fn set(key: &str, value: &str) -> SetRequest {
    SetRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        ..SetRequest::default()
    }
}

fn get(key: &str) -> GetRequest {
    GetRequest {
        key: key.as_bytes().to_vec().into(),
    }
}

#[tokio::test]
async fn get_of_a_missing_key_is_found_false_not_an_error() {
    let node = TestNode::start(Limits::default()).await;
    let reply = node
        .raw()
        .await
        .get(get("nope"))
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.found);
    assert_eq!(reply.version, 0);
    node.stop().await;
}

#[tokio::test]
async fn set_then_get_round_trips_value_version_and_ttl() {
    let node = TestNode::start(Limits::default()).await;
    let mut client = node.raw().await;
    let stored = client
        .set(SetRequest {
            ttl_ms: Some(60_000),
            ..set("k", "hello")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stored.stored && stored.version > 0);
    let got = client.get(get("k")).await.unwrap().into_inner();
    assert!(got.found);
    assert_eq!(got.value.as_ref(), b"hello");
    assert_eq!(got.version, stored.version);
    let ttl = got.ttl_ms.unwrap();
    assert!(ttl > 50_000 && ttl <= 60_000, "{ttl}");
    node.stop().await;
}

#[tokio::test]
async fn a_short_ttl_expires_the_key() {
    let node = TestNode::start(Limits::default()).await;
    let mut client = node.raw().await;
    client
        .set(SetRequest {
            ttl_ms: Some(50),
            ..set("short", "v")
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(!client.get(get("short")).await.unwrap().into_inner().found);
    node.stop().await;
}

#[tokio::test]
async fn conditional_set_and_versioned_delete_follow_the_current_version() {
    let node = TestNode::start(Limits::default()).await;
    let mut client = node.raw().await;
    let if_absent = |key: &str, value: &str| SetRequest {
        condition: SetCondition::IfAbsent as i32,
        ..set(key, value)
    };
    let first = client.set(if_absent("c", "1")).await.unwrap().into_inner();
    assert!(first.stored);
    let second = client.set(if_absent("c", "2")).await.unwrap().into_inner();
    assert!(!second.stored);
    assert_eq!(second.version, first.version);
    let replace_missing = SetRequest {
        condition: SetCondition::IfPresent as i32,
        ..set("absent", "x")
    };
    assert!(
        !client
            .set(replace_missing)
            .await
            .unwrap()
            .into_inner()
            .stored
    );
    let cas = |version| SetRequest {
        condition: SetCondition::IfVersion as i32,
        version,
        ..set("c", "3")
    };
    assert!(
        !client
            .set(cas(first.version + 1))
            .await
            .unwrap()
            .into_inner()
            .stored
    );
    let swapped = client.set(cas(first.version)).await.unwrap().into_inner();
    assert!(swapped.stored);
    let stale_delete = DeleteRequest {
        key: "c".into(),
        if_version: Some(first.version),
    };
    assert!(
        !client
            .delete(stale_delete)
            .await
            .unwrap()
            .into_inner()
            .deleted
    );
    let delete = DeleteRequest {
        key: "c".into(),
        if_version: Some(swapped.version),
    };
    assert!(client.delete(delete).await.unwrap().into_inner().deleted);
    assert!(!client.get(get("c")).await.unwrap().into_inner().found);
    node.stop().await;
}

#[tokio::test]
async fn touch_resets_the_ttl_and_reports_a_missing_key() {
    let node = TestNode::start(Limits::default()).await;
    let mut client = node.raw().await;
    client
        .set(SetRequest {
            ttl_ms: Some(1_000),
            ..set("t", "v")
        })
        .await
        .unwrap();
    let touch = |key: &str, ttl_ms| TouchRequest {
        key: key.as_bytes().to_vec().into(),
        ttl_ms,
    };
    assert!(
        client
            .touch(touch("t", Some(0)))
            .await
            .unwrap()
            .into_inner()
            .found
    );
    assert_eq!(
        client.get(get("t")).await.unwrap().into_inner().ttl_ms,
        None
    );
    assert!(
        !client
            .touch(touch("gone", Some(10)))
            .await
            .unwrap()
            .into_inner()
            .found
    );
    node.stop().await;
}

#[tokio::test]
async fn increment_adds_and_refuses_what_is_not_an_integer() {
    let node = TestNode::start(Limits::default()).await;
    let mut client = node.raw().await;
    let incr = |delta, initial| IncrementRequest {
        key: "n".into(),
        delta,
        initial,
        ttl_ms: None,
    };
    assert_eq!(
        client
            .increment(incr(5, 10))
            .await
            .unwrap()
            .into_inner()
            .value,
        15
    );
    assert_eq!(
        client
            .increment(incr(-20, 0))
            .await
            .unwrap()
            .into_inner()
            .value,
        -5
    );
    client.set(set("n", "not a number")).await.unwrap();
    let err = client.increment(incr(1, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("decimal 64-bit integer"),
        "{}",
        err.message()
    );
    client.set(set("n", &i64::MAX.to_string())).await.unwrap();
    let err = client.increment(incr(1, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("overflows"), "{}", err.message());
    node.stop().await;
}

#[tokio::test]
async fn multi_get_and_multi_set_answer_in_request_order() {
    let node = TestNode::start(Limits::default()).await;
    let mut client = node.raw().await;
    let items = (0..50)
        .map(|i| set(&format!("m{i}"), &format!("v{i}")))
        .collect();
    let results = client
        .multi_set(MultiSetRequest { items })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 50);
    assert!(results.iter().all(|r| r.stored));
    let keys = (0..60)
        .map(|i| format!("m{i}").into_bytes().into())
        .collect();
    let values = client
        .multi_get(MultiGetRequest { keys })
        .await
        .unwrap()
        .into_inner()
        .values;
    for (i, value) in values.iter().enumerate() {
        assert_eq!(value.found, i < 50);
        if i < 50 {
            assert_eq!(value.value.as_ref(), format!("v{i}").as_bytes());
        }
    }
    node.stop().await;
}

#[tokio::test]
async fn a_multi_set_with_one_bad_item_writes_nothing_and_names_the_item() {
    let node = TestNode::start(Limits::default()).await;
    let mut client = node.raw().await;
    let items = vec![set("ok1", "v"), set(&"k".repeat(251), "v"), set("ok2", "v")];
    let err = client
        .multi_set(MultiSetRequest { items })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("items[1]:"), "{}", err.message());
    assert!(!client.get(get("ok1")).await.unwrap().into_inner().found);
    node.stop().await;
}

#[tokio::test]
async fn batches_over_the_limit_are_refused_with_the_limit_named() {
    let node = TestNode::start(Limits::default()).await;
    let mut client = node.raw().await;
    let keys = (0..10_001)
        .map(|i| format!("k{i}").into_bytes().into())
        .collect();
    let err = client
        .multi_get(MultiGetRequest { keys })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("10000"), "{}", err.message());
    node.stop().await;
}

#[tokio::test]
async fn the_pipeline_answers_in_order_and_carries_errors_in_band() {
    let node = TestNode::start(Limits::default()).await;
    let mut client = node.raw().await;
    let mut commands = Vec::new();
    for i in 0..200u64 {
        let op = match i % 4 {
            0 => command::Op::Set(set(&format!("p{i}"), &i.to_string())),
            1 => command::Op::Get(get(&format!("p{}", i - 1))),
            2 => command::Op::Get(get("")),
            _ => command::Op::Increment(IncrementRequest {
                key: "pipeline-counter".into(),
                delta: 1,
                ..IncrementRequest::default()
            }),
        };
        commands.push(Command {
            id: i,
            op: Some(op),
        });
    }
    commands.push(Command { id: 999, op: None });
    let replies: Vec<_> = {
        let stream = client
            .pipeline(tokio_stream::iter(commands))
            .await
            .unwrap()
            .into_inner();
        tokio_stream::StreamExt::collect::<Vec<_>>(stream).await
    };
    assert_eq!(replies.len(), 201);
    for (i, reply) in replies.iter().enumerate() {
        let reply = reply.as_ref().unwrap();
        let i = i as u64;
        if i == 200 {
            assert_eq!(reply.id, 999);
            assert!(
                matches!(&reply.result, Some(reply::Result::Error(e)) if e.message.contains("no op"))
            );
            continue;
        }
        assert_eq!(reply.id, i);
        match (i % 4, reply.result.as_ref().unwrap()) {
            (0, reply::Result::Set(s)) => assert!(s.stored),
            (1, reply::Result::Get(g)) => {
                assert_eq!(g.value.as_ref(), (i - 1).to_string().as_bytes())
            }
            (2, reply::Result::Error(e)) => assert_eq!(e.code, Code::InvalidArgument as i32),
            (3, reply::Result::Increment(n)) => assert_eq!(n.value, (i / 4 + 1) as i64),
            (_, other) => panic!("reply {i}: {other:?}"),
        }
    }
    node.stop().await;
}

#[tokio::test]
async fn stats_count_items_hits_and_misses() {
    let node = TestNode::start(Limits::default()).await;
    let mut client = node.raw().await;
    client.set(set("a", "1")).await.unwrap();
    client.get(get("a")).await.unwrap();
    client.get(get("b")).await.unwrap();
    let stats = client.stats(StatsRequest {}).await.unwrap().into_inner();
    let node_stats = &stats.nodes[0];
    assert_eq!(node_stats.node_id, "test-node-0");
    assert_eq!(
        (node_stats.items, node_stats.hits, node_stats.misses),
        (1, 1, 1)
    );
    assert_eq!(node_stats.limit_bytes, Limits::default().max_memory);
    assert!(node_stats.bytes > 2);
    node.stop().await;
}

#[tokio::test]
async fn topology_of_a_single_node_lists_itself() {
    let node = TestNode::start(Limits::default()).await;
    let topology = node
        .raw()
        .await
        .topology(TopologyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(topology.members.len(), 1);
    assert_eq!(topology.members[0].id, "test-node-0");
    assert_eq!(topology.members[0].address, node.grpc.to_string());
    assert_eq!(topology.replication_factor, 1);
    node.stop().await;
}

#[tokio::test]
async fn bad_keys_values_and_ttls_get_invalid_argument_naming_the_limit() {
    let node = TestNode::start(Limits {
        max_value_size: 1024,
        ..Limits::default()
    })
    .await;
    let mut client = node.raw().await;
    let cases = [
        (set("", "v"), "key is empty"),
        (set(&"k".repeat(251), "v"), "the limit is 250 bytes"),
        (
            set("k", &"v".repeat(1025)),
            "the limit is 1024 bytes (--max-value-size)",
        ),
        (
            SetRequest {
                ttl_ms: Some(400 * 24 * 3600 * 1000),
                ..set("k", "v")
            },
            "365 days",
        ),
        (
            SetRequest {
                condition: 9,
                ..set("k", "v")
            },
            "condition 9 is not a SetCondition",
        ),
    ];
    for (request, expected) in cases {
        let err = client.set(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(
            err.message().contains(expected),
            "{} / {expected}",
            err.message()
        );
    }
    let err = client.get(get(&"k".repeat(300))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    node.stop().await;
}

#[tokio::test]
async fn a_value_larger_than_the_memory_limit_is_resource_exhausted() {
    let node = TestNode::start(Limits {
        max_memory: 1 << 20,
        max_value_size: 4 << 20,
        ..Limits::default()
    })
    .await;
    let mut client = node.raw().await;
    let big = SetRequest {
        key: "big".into(),
        value: vec![0u8; 2 << 20].into(),
        ..SetRequest::default()
    };
    let err = client.set(big).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("--max-memory"), "{}", err.message());
    node.stop().await;
}

/// A message whose field 1 is a varint where GetRequest has bytes: undecodable.
#[derive(Clone, PartialEq, prost::Message)]
struct Malformed {
    #[prost(uint64, tag = "1")]
    key: u64,
}

#[tokio::test]
async fn a_malformed_request_is_refused_and_the_node_keeps_serving() {
    let node = TestNode::start(Limits::default()).await;
    let mut grpc = tonic::client::Grpc::new(node.channel());
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/kcache.v1.Cache/Get");
    let result: Result<tonic::Response<Malformed>, _> = grpc
        .unary(
            tonic::Request::new(Malformed { key: 7 }),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await;
    // tonic refuses a body it cannot decode as INTERNAL, naming the decode failure.
    let err = result.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("decode"), "{err:?}");
    let mut client = node.raw().await;
    client.set(set("still", "alive")).await.unwrap();
    assert!(client.get(get("still")).await.unwrap().into_inner().found);
    node.stop().await;
}

#[tokio::test]
async fn the_node_bounds_the_streams_a_connection_may_open() {
    let node = TestNode::start(Limits::default()).await;
    let tcp = tokio::net::TcpStream::connect(node.grpc).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    // Until the server's SETTINGS arrive the limit reads as unbounded.
    let advertised = async {
        loop {
            let limit = send.current_max_send_streams();
            if limit != usize::MAX {
                return limit;
            }
            send = send.ready().await.unwrap();
            tokio::task::yield_now().await;
        }
    };
    let limit = tokio::time::timeout(std::time::Duration::from_secs(5), advertised)
        .await
        .expect("the server's SETTINGS within 5 s");
    assert_eq!(limit, kcache_node::server::MAX_CONCURRENT_STREAMS as usize);
    node.stop().await;
}
