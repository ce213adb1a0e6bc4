//! Malformed HTTP/2 and gRPC against a real kcache-node process over raw sockets: each
//! gets a clear answer (a gRPC status with a message where a request got that far, a
//! GOAWAY naming the protocol error otherwise), the process neither exits nor logs a
//! panic, and a normal client is served right afterwards.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod process;

use std::time::Duration;

use bytes::Bytes;
use kcache_client::proto::{GetRequest, SetRequest, cache_client::CacheClient};
use process::NodeProcess;
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame types and error codes of RFC 9113 that the tests name.
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PROTOCOL_ERROR: u32 = 0x1;
const FRAME_SIZE_ERROR: u32 = 0x6;
/// How long a test waits for an answer it is owed: far beyond what a healthy node
/// needs, so only a wedged one hits it.
const OWED: Duration = Duration::from_secs(10);

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    /// A GOAWAY's error code.
    fn goaway_code(&self) -> Option<u32> {
        (self.kind == GOAWAY).then(|| u32::from_be_bytes(self.payload[4..8].try_into().unwrap()))
    }
}

/// Splits what the server sent into frames (an incomplete last frame is dropped).
fn frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        if bytes.len() < 9 + len {
            break;
        }
        out.push(Frame {
            kind: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes(bytes[5..9].try_into().unwrap()) & 0x7fff_ffff,
            payload: bytes[9..9 + len].to_vec(),
        });
        bytes = &bytes[9 + len..];
    }
    out
}

/// Reads until the server closes the connection (or resets it) and returns the frames
/// it sent; fails if it neither closes nor answers within [`OWED`].
async fn read_until_closed(tcp: &mut TcpStream) -> Vec<Frame> {
    let mut received = Vec::new();
    let mut chunk = [0; 16 << 10];
    let closed = tokio::time::timeout(OWED, async {
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the node kept the connection open");
    frames(&received)
}

/// Reads frames until one matches `done`; fails if the connection closes first.
async fn read_until(tcp: &mut TcpStream, done: impl Fn(&Frame) -> bool) -> Vec<Frame> {
    let mut received = Vec::new();
    let mut chunk = [0; 16 << 10];
    tokio::time::timeout(OWED, async {
        loop {
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before answering: {:?}", frames(&received));
            received.extend_from_slice(&chunk[..n]);
            let parsed = frames(&received);
            if parsed.iter().any(&done) {
                return parsed;
            }
        }
    })
    .await
    .expect("the node answers")
}

/// A literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2),
/// for names and values shorter than 127 bytes.
fn header(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x00, name.len() as u8];
    out.extend(name.as_bytes());
    out.push(value.len() as u8);
    out.extend(value.as_bytes());
    out
}

fn grpc_headers(path: &str) -> Vec<u8> {
    [
        header(":method", "POST"),
        header(":scheme", "http"),
        header(":path", path),
        header(":authority", "localhost"),
        header("content-type", "application/grpc"),
        header("te", "trailers"),
    ]
    .concat()
}

/// A connection that has sent the preface and an empty SETTINGS frame.
async fn handshaken(node: &NodeProcess) -> TcpStream {
    let mut tcp = TcpStream::connect(&node.grpc).await.unwrap();
    tcp.write_all(PREFACE).await.unwrap();
    tcp.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    tcp
}

/// A normal client writes a key and reads it back, and the process is alive and has
/// not panicked.
async fn assert_serves(node: &mut NodeProcess) {
    let served = tokio::time::timeout(OWED, async {
        let mut client = CacheClient::connect(format!("http://{}", node.grpc))
            .await
            .unwrap();
        client
            .set(SetRequest {
                key: "after".into(),
                value: "bad input".into(),
                ..SetRequest::default()
            })
            .await
            .unwrap();
        client
            .get(GetRequest {
                key: "after".into(),
            })
            .await
            .unwrap()
            .into_inner()
    })
    .await
    .expect("a normal client is served");
    assert!(served.found);
    assert_eq!(served.value.as_ref(), b"bad input");
    node.assert_alive_without_panics();
}

/// The gRPC status of one request sent over HTTP/2 with `body` as its DATA: the
/// trailers' grpc-status and grpc-message (or the headers', for a trailers-only reply).
async fn grpc_call(node: &NodeProcess, path: &str, body: Vec<u8>) -> (i32, String) {
    let tcp = TcpStream::connect(&node.grpc).await.unwrap();
    let (mut send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut stream) = send.send_request(request, false).unwrap();
    stream.send_data(Bytes::from(body), true).unwrap();
    tokio::time::timeout(OWED, async {
        let response = response.await.unwrap();
        let mut headers = response.headers().clone();
        let mut body = response.into_body();
        if !headers.contains_key("grpc-status") {
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap();
                body.flow_control().release_capacity(chunk.len()).unwrap();
            }
            headers = body.trailers().await.unwrap().expect("trailers");
        }
        let code = headers["grpc-status"].to_str().unwrap().parse().unwrap();
        let message = headers
            .get("grpc-message")
            .map(|m| percent_decode(m.to_str().unwrap()))
            .unwrap_or_default();
        (code, message)
    })
    .await
    .expect("the node answers the call")
}

/// grpc-message is percent-encoded (gRPC over HTTP/2 spec).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
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

/// A gRPC message: the 5-byte prefix (not compressed, big-endian length) and `payload`.
fn grpc_message(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend((payload.len() as u32).to_be_bytes());
    out.extend(payload);
    out
}

/// A connection whose preface is wrong is closed. RFC 9113 3.4 lets the server omit
/// the GOAWAY there (the peer does not speak HTTP/2), and hyper's h2 does: it sends its
/// SETTINGS and closes. Any GOAWAY it did send would have to say PROTOCOL_ERROR.
#[tokio::test]
async fn a_wrong_connection_preface_closes_the_connection() {
    let mut node = NodeProcess::start(&[]);
    for wrong in [
        &b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"[..],
        // HTTP/1.1 on the gRPC port.
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let mut tcp = TcpStream::connect(&node.grpc).await.unwrap();
        tcp.write_all(wrong).await.unwrap();
        let frames = read_until_closed(&mut tcp).await;
        assert!(
            frames
                .iter()
                .filter_map(Frame::goaway_code)
                .all(|code| code == PROTOCOL_ERROR),
            "{frames:?}"
        );
        assert!(
            frames
                .iter()
                .all(|f| f.kind == SETTINGS || f.kind == GOAWAY)
        );
    }
    assert_serves(&mut node).await;
}

#[tokio::test]
async fn garbage_frames_get_a_goaway_naming_the_error() {
    let mut node = NodeProcess::start(&[]);
    // A frame longer than the 16 KiB SETTINGS_MAX_FRAME_SIZE the node allows.
    let mut tcp = handshaken(&node).await;
    tcp.write_all(&[0xff, 0xff, 0xff, 0xab, 0xcd, 0x12, 0x34, 0x56, 0x78])
        .await
        .unwrap();
    let codes: Vec<_> = read_until_closed(&mut tcp)
        .await
        .iter()
        .filter_map(Frame::goaway_code)
        .collect();
    assert_eq!(codes, [FRAME_SIZE_ERROR]);
    // DATA on stream 0, which carries only connection frames.
    let mut tcp = handshaken(&node).await;
    tcp.write_all(&frame(DATA, 0, 0, b"garbage")).await.unwrap();
    let codes: Vec<_> = read_until_closed(&mut tcp)
        .await
        .iter()
        .filter_map(Frame::goaway_code)
        .collect();
    assert_eq!(codes, [PROTOCOL_ERROR]);
    // A SETTINGS frame whose length is not a multiple of 6. RFC 9113 6.5 asks for
    // FRAME_SIZE_ERROR; h2 (0.4) answers every malformed SETTINGS with PROTOCOL_ERROR.
    let mut tcp = handshaken(&node).await;
    tcp.write_all(&frame(SETTINGS, 0, 0, &[1, 2, 3, 4, 5]))
        .await
        .unwrap();
    let codes: Vec<_> = read_until_closed(&mut tcp)
        .await
        .iter()
        .filter_map(Frame::goaway_code)
        .collect();
    assert_eq!(codes, [PROTOCOL_ERROR]);
    // A HEADERS block that is not valid HPACK (index 0 is not a table entry). RFC 9113
    // 4.3 asks for COMPRESSION_ERROR; h2 (0.4) says PROTOCOL_ERROR.
    let mut tcp = handshaken(&node).await;
    tcp.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &[0x80]))
        .await
        .unwrap();
    let codes: Vec<_> = read_until_closed(&mut tcp)
        .await
        .iter()
        .filter_map(Frame::goaway_code)
        .collect();
    assert_eq!(codes, [PROTOCOL_ERROR]);
    assert_serves(&mut node).await;
}

#[tokio::test]
async fn window_update_and_priority_on_a_half_closed_stream_are_accepted() {
    // h2spec's generic/2/2 and 2/3 expect a DATA frame back, which a gRPC error reply
    // (trailers only) never has; what they check is that the frames are accepted.
    let mut node = NodeProcess::start(&[]);
    let mut tcp = handshaken(&node).await;
    let mut request = frame(
        HEADERS,
        END_HEADERS,
        1,
        &grpc_headers("/kcache.v1.Cache/Get"),
    );
    let get = GetRequest { key: "k".into() }.encode_to_vec();
    request.extend(frame(DATA, END_STREAM, 1, &grpc_message(&get)));
    request.extend(frame(WINDOW_UPDATE, 0, 1, &1u32.to_be_bytes()));
    request.extend(frame(PRIORITY, 0, 1, &[0, 0, 0, 0, 16]));
    tcp.write_all(&request).await.unwrap();
    let frames = read_until(&mut tcp, |f| {
        f.stream == 1 && f.kind == HEADERS && f.flags & END_STREAM != 0
    })
    .await;
    assert!(
        frames.iter().all(|f| f.kind != GOAWAY && f.kind != 0x3),
        "no GOAWAY, no RST_STREAM: {frames:?}"
    );
    assert!(frames.iter().any(|f| f.stream == 1 && f.kind == DATA));
    assert_serves(&mut node).await;
}

#[tokio::test]
async fn a_request_for_an_unknown_method_is_unimplemented() {
    let mut node = NodeProcess::start(&[]);
    let (code, _) = grpc_call(&node, "/kcache.v1.Cache/Nope", grpc_message(&[])).await;
    assert_eq!(code, tonic::Code::Unimplemented as i32);
    let (code, _) = grpc_call(&node, "/no.such.Service/Get", grpc_message(&[])).await;
    assert_eq!(code, tonic::Code::Unimplemented as i32);
    assert_serves(&mut node).await;
}

#[tokio::test]
async fn a_truncated_length_prefix_is_an_error_naming_the_eof() {
    let mut node = NodeProcess::start(&[]);
    let (code, message) = grpc_call(&node, "/kcache.v1.Cache/Get", vec![0, 0, 0]).await;
    assert_eq!(
        (code, message.as_str()),
        (
            tonic::Code::Internal as i32,
            "Unexpected EOF decoding stream."
        ),
    );
    // A prefix that promises more than the body holds.
    let mut short = grpc_message(b"\x0a\x01k");
    short[4] = 200;
    let (code, message) = grpc_call(&node, "/kcache.v1.Cache/Get", short).await;
    assert_eq!(
        (code, message.as_str()),
        (
            tonic::Code::Internal as i32,
            "Unexpected EOF decoding stream."
        ),
    );
    assert_serves(&mut node).await;
}

/// tonic answers OUT_OF_RANGE (not RESOURCE_EXHAUSTED) for a message over its decode
/// limit, with a message naming the limit.
#[tokio::test]
async fn a_length_prefix_beyond_the_decode_limit_is_out_of_range() {
    let mut node = NodeProcess::start(&[]);
    // Only the prefix: the node must refuse it without waiting for 4 GiB to arrive.
    let (code, message) = grpc_call(
        &node,
        "/kcache.v1.Cache/Set",
        vec![0, 0xff, 0xff, 0xff, 0xff],
    )
    .await;
    assert_eq!(
        (code, message.as_str()),
        (
            tonic::Code::OutOfRange as i32,
            "Error, decoded message length too large: found 4294967295 bytes, the limit is: 16777216 bytes"
        )
    );
    assert_serves(&mut node).await;
}

#[tokio::test]
async fn invalid_protobuf_is_an_error_naming_the_decode_failure() {
    let mut node = NodeProcess::start(&[]);
    // Field 1 as a length-delimited value longer than the message.
    let (code, message) = grpc_call(
        &node,
        "/kcache.v1.Cache/Get",
        grpc_message(b"\x0a\xff\x01k"),
    )
    .await;
    assert_eq!(code, tonic::Code::Internal as i32, "{message}");
    assert!(
        message.contains("failed to decode Protobuf message"),
        "{message}"
    );
    // A varint that never ends.
    let (code, message) = grpc_call(
        &node,
        "/kcache.v1.Cache/Set",
        grpc_message(&[
            0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ]),
    )
    .await;
    assert_eq!(code, tonic::Code::Internal as i32, "{message}");
    assert!(
        message.contains("failed to decode Protobuf message"),
        "{message}"
    );
    // A compressed message, when the node offered no compression.
    let mut compressed = grpc_message(b"\x0a\x01k");
    compressed[0] = 1;
    let (code, message) = grpc_call(&node, "/kcache.v1.Cache/Get", compressed).await;
    assert_eq!(code, tonic::Code::Internal as i32, "{message}");
    assert!(message.contains("compress"), "{message}");
    // Valid protobuf of the wrong shape decodes to defaults and gets the API's own
    // answer: an empty key.
    let wrong = SetRequest {
        key: Bytes::new(),
        value: "v".into(),
        ..SetRequest::default()
    }
    .encode_to_vec();
    let (code, message) = grpc_call(&node, "/kcache.v1.Cache/Set", grpc_message(&wrong)).await;
    assert_eq!(code, tonic::Code::InvalidArgument as i32);
    assert!(message.contains("key is empty"), "{message}");
    assert_serves(&mut node).await;
}

#[tokio::test]
async fn slowloris_connections_that_never_finish_the_preface_do_not_stop_others() {
    let mut node = NodeProcess::start(&[]);
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut tcp = TcpStream::connect(&node.grpc).await.unwrap();
        tcp.write_all(&PREFACE[..10]).await.unwrap();
        stalled.push(tcp);
    }
    // Half a preface on a HEADERS frame too: a stream that never ends its headers.
    for _ in 0..50 {
        let mut tcp = handshaken(&node).await;
        let block = grpc_headers("/kcache.v1.Cache/Get");
        tcp.write_all(&frame(HEADERS, 0, 1, &block)).await.unwrap();
        stalled.push(tcp);
    }
    assert_serves(&mut node).await;
    drop(stalled);
    assert_serves(&mut node).await;
}
