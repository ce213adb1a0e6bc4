//! Arbitrary bytes as gRPC requests to a single node's Cache and Peer services, through
//! tonic's own server stack (framing, protobuf decoding, the handlers, the store) with
//! the node's default limits and its decode limit, without a network.
//!
//! An input is a sequence of requests on one node: a selector byte (the low four bits
//! pick the method, bit 4 sends the payload as the raw HTTP body instead of one framed
//! message), a two-byte little-endian length and the payload. After each request:
//! no handler panicked (libFuzzer reports a panic as a crash), the reply's grpc-status
//! is one the API documents for bad input, decode errors name themselves, and the
//! bytes charged stay within --max-memory.
#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use kcache_client::placement::Member;
use kcache_client::proto::{cache_server::CacheServer, peer_server::PeerServer};
use kcache_node::cluster::{Cluster, PeerService};
use kcache_node::config::Args;
use kcache_node::metrics::Metrics;
use kcache_node::service::{CacheService, NodeInfo};
use kcache_node::store::Store;
use libfuzzer_sys::fuzz_target;
use tokio::sync::watch;
use tower_service::Service as _;

const METHODS: [&str; 14] = [
    "/kcache.v1.Cache/Get",
    "/kcache.v1.Cache/Set",
    "/kcache.v1.Cache/Delete",
    "/kcache.v1.Cache/Touch",
    "/kcache.v1.Cache/Increment",
    "/kcache.v1.Cache/MultiGet",
    "/kcache.v1.Cache/MultiSet",
    "/kcache.v1.Cache/Pipeline",
    "/kcache.v1.Cache/Stats",
    "/kcache.v1.Cache/Topology",
    "/kcache.v1.Peer/Replicate",
    "/kcache.v1.Peer/Handoff",
    "/kcache.v1.Peer/Sync",
    "/kcache.v1.Cache/NoSuchMethod",
];

/// The decode limit the node sets (server.rs): the value limit plus framing, at least
/// 16 MiB.
const DECODE_LIMIT: usize = 16 << 20;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
});

/// The node's limits as its flags give them, with a small memory limit (the
/// smallest the flag accepts) so that evictions happen within one input.
static ARGS: LazyLock<Args> = LazyLock::new(|| {
    use clap::Parser as _;
    Args::try_parse_from(["kcache-node", "--max-memory", "1MiB"]).expect("valid flags")
});

struct Node {
    store: Arc<Store>,
    cache: CacheServer<CacheService>,
    peer: PeerServer<PeerService>,
    /// Held so that open pipelines are not told to stop.
    _stop: watch::Sender<bool>,
}

fn node() -> Node {
    let limits = ARGS.limits().expect("valid limits");
    let store = Arc::new(Store::new(limits));
    let me = Member {
        id: "fuzz-0".into(),
        address: "127.0.0.1:1".into(),
    };
    let cluster = Arc::new(Cluster::single(me.clone()));
    let (stop, stopped) = watch::channel(false);
    let info = NodeInfo {
        node_id: me.id,
        address: me.address,
        started: Instant::now(),
    };
    let cache = CacheServer::new(CacheService::new(
        store.clone(),
        Metrics::new(store.clone()),
        info,
        cluster.clone(),
        stopped,
    ))
    .max_decoding_message_size(DECODE_LIMIT);
    let peer = PeerServer::new(PeerService::new(store.clone(), cluster))
        .max_decoding_message_size(DECODE_LIMIT);
    Node {
        store,
        cache,
        peer,
        _stop: stop,
    }
}

/// The requests in an input: (method, HTTP body).
fn requests(mut data: &[u8]) -> Vec<(&'static str, Bytes)> {
    let mut out = Vec::new();
    while let [selector, lo, hi, rest @ ..] = data {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len());
        let (payload, rest) = rest.split_at(len);
        data = rest;
        let method = METHODS[usize::from(selector & 0x0f) % METHODS.len()];
        let body = if selector & 0x10 != 0 {
            Bytes::copy_from_slice(payload)
        } else {
            let mut framed = vec![0];
            framed.extend((payload.len() as u32).to_be_bytes());
            framed.extend(payload);
            framed.into()
        };
        out.push((method, body));
    }
    out
}

/// The reply's grpc-status and grpc-message (trailers, or headers when trailers-only).
async fn call(node: &mut Node, method: &str, body: Bytes) -> (i32, String) {
    let request = http::Request::post(format!("http://localhost{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(body))
        .expect("a valid request");
    let response = if method.starts_with("/kcache.v1.Peer/") {
        node.peer.call(request).await
    } else {
        node.cache.call(request).await
    }
    .expect("tonic's services never fail the call itself");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await;
    let headers = match &collected {
        Ok(c) if !parts.headers.contains_key("grpc-status") => c
            .trailers()
            .cloned()
            .unwrap_or_else(|| panic!("{method}: no trailers and no grpc-status")),
        Ok(_) => parts.headers,
        Err(status) => panic!("{method}: the reply's body failed: {status:?}"),
    };
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{method}: no grpc-status in {headers:?}"));
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    (code, message)
}

/// grpc-message is percent-encoded (gRPC over HTTP/2).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn check(method: &str, code: i32, message: &str) {
    use tonic::Code;
    let ok = match Code::from_i32(code) {
        Code::Ok => true,
        // What the API documents for bad input.
        Code::InvalidArgument | Code::ResourceExhausted | Code::FailedPrecondition => {
            !message.is_empty()
        }
        // tonic's framing and decoding: an unknown method, a body that is not
        // protobuf, a unary call with no message, a compression flag nobody
        // negotiated, a message over the decode limit.
        Code::Unimplemented => true,
        Code::Internal => {
            message.contains("decod")
                || message.contains("EOF")
                || message.contains("compress")
                || message == "Missing request message."
        }
        Code::OutOfRange => message.contains("too large"),
        // A cluster of one never forwards, so nothing is ever unavailable or late.
        _ => false,
    };
    assert!(ok, "{method}: status {code} {message:?}");
}

fuzz_target!(|data: &[u8]| {
    let requests = requests(data);
    RUNTIME.block_on(async {
        let mut node = node();
        let limit = node.store.limits().max_memory;
        for (method, body) in requests {
            let (code, message) = call(&mut node, method, body).await;
            check(method, code, &message);
            let bytes = node.store.stats().bytes;
            assert!(bytes <= limit, "{bytes} bytes charged over {limit}");
        }
    });
});
