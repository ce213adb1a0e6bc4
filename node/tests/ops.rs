//! What operators and tools rely on: health, reflection (v1 and v1alpha), the admin
//! endpoints, shutdown, and the CLI against a live node.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use clap::Parser;
use common::TestNode;
use kcache_cli::{self as cli, Cli};
use kcache_client::proto::{Command, GetRequest, command};
use kcache_node::store::Limits;
use tokio_stream::StreamExt;

#[tokio::test]
async fn health_reports_serving_for_the_cache_and_the_server() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let node = TestNode::start(Limits::default()).await;
    let mut health = HealthClient::new(node.channel());
    for service in ["", "kcache.v1.Cache"] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status, ServingStatus::Serving as i32, "{service:?}");
    }
    node.stop().await;
}

#[tokio::test]
async fn reflection_v1_lists_the_cache_service() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let node = TestNode::start(Limits::default()).await;
    let mut client = ServerReflectionClient::new(node.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reply {reply:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"kcache.v1.Cache"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    node.stop().await;
}

#[tokio::test]
async fn reflection_v1alpha_serves_the_cache_proto_for_older_tools() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let node = TestNode::start(Limits::default()).await;
    let mut client = ServerReflectionClient::new(node.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "kcache.v1.Cache".into(),
        )),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = reply.message_response else {
        panic!("unexpected reply {reply:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    node.stop().await;
}

#[tokio::test]
async fn metrics_healthz_and_readyz_answer_on_the_admin_port() {
    let node = TestNode::start(Limits::default()).await;
    let mut client = node.raw().await;
    client.get(GetRequest { key: "m".into() }).await.unwrap();
    assert!(client.get(GetRequest { key: "".into() }).await.is_err());
    let (status, body) = node.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for expected in [
        r#"kcache_requests_total{code="OK",op="get",protocol="grpc"} 1"#,
        r#"kcache_requests_total{code="InvalidArgument",op="get",protocol="grpc"} 1"#,
        r#"kcache_request_duration_seconds_bucket{op="get",protocol="grpc",le="0.001"}"#,
        "kcache_misses_total 1",
        "kcache_hits_total 0",
        "kcache_items 0",
        "kcache_evictions_total 0",
        "kcache_expirations_total 0",
        "kcache_memory_bytes 0",
        "kcache_memory_limit_bytes 67108864",
        "kcache_memory_budget_bytes 67108864",
        "kcache_tombstones 0",
        "kcache_tombstones_dropped_total 0",
    ] {
        assert!(body.contains(expected), "missing {expected:?} in\n{body}");
    }
    assert_eq!(node.admin_get("/healthz").await.0, 200);
    assert_eq!(node.admin_get("/readyz").await.0, 200);
    node.stop().await;
}

#[tokio::test]
async fn shutdown_completes_while_a_pipeline_is_open() {
    let node = TestNode::start(Limits::default()).await;
    let mut client = node.raw().await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(Command {
        id: 1,
        op: Some(command::Op::Get(GetRequest { key: "k".into() })),
    })
    .await
    .unwrap();
    let mut replies = client
        .pipeline(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(replies.next().await.unwrap().is_ok());
    // The client keeps its side of the stream open (tx is alive) while the node stops.
    tokio::time::timeout(std::time::Duration::from_secs(10), node.stop())
        .await
        .expect("the node stops despite an open pipeline");
    drop(tx);
}

async fn kcache(args: &[&str]) -> (u8, String, String) {
    let cli = Cli::try_parse_from(std::iter::once("kcache").chain(args.iter().copied())).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::run(cli, std::io::empty(), &mut out, &mut err).await;
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[tokio::test]
async fn the_cli_round_trips_and_exits_with_meaningful_codes() {
    let node = TestNode::start(Limits::default()).await;
    let addr = node.grpc.to_string();
    let (code, out, _) =
        kcache(&["--addr", &addr, "set", "greeting", "hello", "--ttl", "1h"]).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("OK version="), "{out}");
    let (code, out, _) = kcache(&["--addr", &addr, "get", "greeting"]).await;
    assert_eq!((code, out.as_str()), (0, "hello\n"));
    let (code, out, _) = kcache(&["--addr", &addr, "ttl", "greeting"]).await;
    assert_eq!(code, 0);
    assert!(out.contains('s'), "{out}");
    let (code, _, err) = kcache(&["--addr", &addr, "get", "missing"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
    let (code, out, _) = kcache(&["--addr", &addr, "incr", "visits", "5"]).await;
    assert_eq!((code, out.trim()), (0, "5"));
    let (code, out, _) = kcache(&["--addr", &addr, "set", "greeting", "again", "--nx"]).await;
    assert_eq!(code, 1, "{out}");
    let long_key = "k".repeat(300);
    let (code, _, err) = kcache(&["--addr", &addr, "get", &long_key]).await;
    assert_eq!(code, 3);
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("250"),
        "{err}"
    );
    let (code, out, _) = kcache(&["--addr", &addr, "stats"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("test-node-0"), "{out}");
    let (code, out, _) = kcache(&["--addr", &addr, "del", "greeting"]).await;
    assert_eq!((code, out.trim()), (0, "deleted"));
    node.stop().await;
    let (code, _, err) = kcache(&["--addr", &addr, "--timeout", "300ms", "get", "k"]).await;
    assert_eq!(code, 4, "{err}");
}
