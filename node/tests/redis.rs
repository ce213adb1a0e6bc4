//! The Redis-protocol port over a real socket: exact replies byte for byte (as
//! redis-server 7.2 answers them), pipelining, RESP3, and malformed streams that get
//! a protocol error naming the limit while the node goes on serving.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::TestNode;
use kcache_node::store::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Long enough for a debug build under a parallel test run; a healthy reply takes
/// microseconds.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

struct Conn(TcpStream);

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self(stream)
    }

    /// Sends `request` and demands exactly `reply` back.
    async fn expect(&mut self, request: &[u8], reply: &str) {
        self.0.write_all(request).await.unwrap();
        self.reads(reply).await;
    }

    /// Demands exactly `reply` next on the stream.
    async fn reads(&mut self, reply: &str) {
        let mut got = vec![0; reply.len()];
        tokio::time::timeout(REPLY_TIMEOUT, self.0.read_exact(&mut got))
            .await
            .unwrap_or_else(|_| panic!("no reply; expected {reply:?}"))
            .unwrap_or_else(|e| panic!("{e}; expected {reply:?}"));
        assert_eq!(String::from_utf8_lossy(&got), reply);
    }

    /// Demands that the node closes the connection (after any reply already read).
    async fn closed(&mut self) {
        let mut rest = Vec::new();
        tokio::time::timeout(REPLY_TIMEOUT, self.0.read_to_end(&mut rest))
            .await
            .expect("the node closes the connection")
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&rest), "");
    }
}

/// A command as a client library sends it: an array of bulk strings.
fn cmd(words: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for w in words {
        out.extend_from_slice(format!("${}\r\n{w}\r\n", w.len()).as_bytes());
    }
    out
}

#[tokio::test]
async fn core_commands_answer_exactly_as_redis_does() {
    let node = TestNode::start(Limits::default()).await;
    let mut c = Conn::open(node.redis).await;
    let script: &[(&[&str], &str)] = &[
        (&["PING"], "+PONG\r\n"),
        (&["ping", "hi"], "$2\r\nhi\r\n"),
        (&["ECHO", "a b"], "$3\r\na b\r\n"),
        (&["SELECT", "0"], "+OK\r\n"),
        (&["SELECT", "1"], "-ERR DB index is out of range\r\n"),
        (&["GET", "k"], "$-1\r\n"),
        (&["SET", "k", "v1"], "+OK\r\n"),
        (&["GET", "k"], "$2\r\nv1\r\n"),
        (&["SET", "k", "v2", "NX"], "$-1\r\n"),
        (&["SET", "k", "v2", "XX", "GET"], "$2\r\nv1\r\n"),
        (&["SET", "absent", "x", "XX"], "$-1\r\n"),
        (
            &["SET", "k", "v", "EX", "0"],
            "-ERR invalid expire time in 'set' command\r\n",
        ),
        (
            &["SET", "k", "v", "EX", "x"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (&["SET", "k", "v", "NX", "XX"], "-ERR syntax error\r\n"),
        (&["TTL", "k"], ":-1\r\n"),
        (&["TTL", "nokey"], ":-2\r\n"),
        (&["EXPIRE", "k", "100"], ":1\r\n"),
        (&["TTL", "k"], ":100\r\n"),
        (&["EXPIRE", "k", "50", "GT"], ":0\r\n"),
        (&["PERSIST", "k"], ":1\r\n"),
        (&["PERSIST", "k"], ":0\r\n"),
        (&["SET", "k", "v3", "KEEPTTL"], "+OK\r\n"),
        (&["GETEX", "k", "PX", "5000"], "$2\r\nv3\r\n"),
        (&["TTL", "k"], ":5\r\n"),
        (&["GETEX", "k", "PERSIST"], "$2\r\nv3\r\n"),
        (&["PTTL", "k"], ":-1\r\n"),
        (&["GETDEL", "k"], "$2\r\nv3\r\n"),
        (&["GETDEL", "k"], "$-1\r\n"),
        (&["INCR", "n"], ":1\r\n"),
        (&["INCRBY", "n", "41"], ":42\r\n"),
        (&["DECR", "n"], ":41\r\n"),
        (&["DECRBY", "n", "-9"], ":50\r\n"),
        (
            &["INCRBY", "n", "1.5"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            &["INCRBY", "n", "9223372036854775807"],
            "-ERR increment or decrement would overflow\r\n",
        ),
        (&["SET", "s", "abc"], "+OK\r\n"),
        (
            &["INCR", "s"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (&["MSET", "a", "1", "b", "2"], "+OK\r\n"),
        (
            &["MSET", "a", "1", "b"],
            "-ERR wrong number of arguments for 'mset' command\r\n",
        ),
        (
            &["MGET", "a", "nokey", "b"],
            "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n",
        ),
        (&["EXISTS", "a", "b", "nokey", "a"], ":3\r\n"),
        (&["DEL", "a", "nokey"], ":1\r\n"),
        (&["UNLINK", "b"], ":1\r\n"),
        (&["DBSIZE"], ":2\r\n"),
        (
            &["GET"],
            "-ERR wrong number of arguments for 'get' command\r\n",
        ),
        (
            &["GET", "a", "b"],
            "-ERR wrong number of arguments for 'get' command\r\n",
        ),
        (
            &["HSET", "h", "f", "v"],
            "-ERR unknown command 'HSET', with args beginning with: 'h' 'f' 'v' \r\n",
        ),
        (&["CLIENT", "SETNAME", "worker-1"], "+OK\r\n"),
        (&["CLIENT", "GETNAME"], "$8\r\nworker-1\r\n"),
        (&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"], "+OK\r\n"),
        (
            &["CLIENT", "NOPE"],
            "-ERR unknown subcommand 'NOPE'. Try CLIENT HELP.\r\n",
        ),
        (
            &["AUTH", "secret"],
            "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n",
        ),
        (&["READONLY"], "+OK\r\n"),
        (
            &["CLUSTER", "SLOTS"],
            "-ERR This instance has cluster support disabled\r\n",
        ),
        (
            &["COMMAND", "INFO", "get", "nope"],
            "*2\r\n*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n*0\r\n*0\r\n*0\r\n*0\r\n$-1\r\n",
        ),
        (&["FLUSHDB"], "+OK\r\n"),
        (&["DBSIZE"], ":0\r\n"),
        (&["QUIT"], "+OK\r\n"),
    ];
    for (words, reply) in script {
        c.expect(&cmd(words), reply).await;
    }
    c.closed().await;
    node.stop().await;
}

#[tokio::test]
async fn inline_commands_and_empty_keys_and_limits_are_answered() {
    let limits = Limits {
        max_value_size: 1024,
        ..Limits::default()
    };
    let node = TestNode::start(limits).await;
    let mut c = Conn::open(node.redis).await;
    c.expect(b"SET \"a key\" 'x y'\r\n", "+OK\r\n").await;
    c.expect(b"GET \"a key\"\r\n", "$3\r\nx y\r\n").await;
    c.expect(b"\r\n\r\nPING\n", "+PONG\r\n").await;
    c.expect(
        &cmd(&["GET", ""]),
        "-ERR key is empty; keys are 1 to 250 bytes\r\n",
    )
    .await;
    // Over the value limit but within the parser's slack: the store names the limit
    // and the stream goes on.
    let value = "v".repeat(2000);
    c.expect(
        &cmd(&["SET", "big", &value]),
        "-ERR value is 2000 bytes; the limit is 1024 bytes (--max-value-size)\r\n",
    )
    .await;
    c.expect(&cmd(&["PING"]), "+PONG\r\n").await;
    node.stop().await;
}

#[tokio::test]
async fn a_pipeline_of_a_thousand_commands_is_answered_in_order() {
    let node = TestNode::start(Limits::default()).await;
    let mut c = Conn::open(node.redis).await;
    let mut request = Vec::new();
    let mut reply = String::new();
    for i in 0..1000 {
        request.extend(cmd(&["SET", &format!("k{i}"), &i.to_string()]));
        request.extend(cmd(&["GET", &format!("k{i}")]));
        request.extend(cmd(&["INCR", &format!("k{i}")]));
        let v = i.to_string();
        reply.push_str(&format!("+OK\r\n${}\r\n{v}\r\n:{}\r\n", v.len(), i + 1));
    }
    c.expect(&request, &reply).await;
    node.stop().await;
}

#[tokio::test]
async fn hello_3_switches_the_connection_to_resp3() {
    let node = TestNode::start(Limits::default()).await;
    let mut c = Conn::open(node.redis).await;
    c.expect(
        &cmd(&["HELLO", "4"]),
        "-NOPROTO unsupported protocol version\r\n",
    )
    .await;
    let hello = "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.0\r\n\
                 $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:1\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
                 $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";
    c.expect(
        &cmd(&["HELLO", "3", "AUTH", "default", "x", "SETNAME", "me"]),
        hello,
    )
    .await;
    c.expect(&cmd(&["GET", "nokey"]), "_\r\n").await;
    c.expect(&cmd(&["CLIENT", "GETNAME"]), "$2\r\nme\r\n").await;
    node.stop().await;
}

#[tokio::test]
async fn malformed_streams_get_an_error_naming_the_limit_and_the_node_keeps_serving() {
    let limits = Limits {
        max_value_size: 1024,
        ..Limits::default()
    };
    let node = TestNode::start(limits).await;
    let cases: &[(&[u8], &str)] = &[
        (
            b"*1\r\n$99999999\r\n",
            "-ERR Protocol error: bulk length 99999999 is over the limit of 66560 bytes (--max-value-size plus 64 KiB)\r\n",
        ),
        (
            b"*2000000000\r\n",
            "-ERR Protocol error: 2000000000 arguments is over the limit of 32768\r\n",
        ),
        (
            b"*x\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n:5\r\n",
            "-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"*1\r\n$-5\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$2\r\nabcd\r\n",
            "-ERR Protocol error: bulk string not followed by CRLF\r\n",
        ),
        (
            b"GET \"k\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ];
    for (request, reply) in cases {
        let mut c = Conn::open(node.redis).await;
        c.expect(request, reply).await;
        c.closed().await;
    }
    // A line of 70 KiB without a newline: refused at the inline limit.
    let mut c = Conn::open(node.redis).await;
    c.expect(
        &vec![b'a'; 70 * 1024],
        "-ERR Protocol error: line of over 65536 bytes without CRLF (inline limit)\r\n",
    )
    .await;
    c.closed().await;
    // Binary garbage on one line is a command nobody knows, and the stream goes on.
    let mut c = Conn::open(node.redis).await;
    c.expect(
        b"\x00\x01\xff\r\n",
        "-ERR unknown command '\0\u{1}\u{fffd}', with args beginning with: \r\n",
    )
    .await;
    c.expect(&cmd(&["PING"]), "+PONG\r\n").await;
    // Clients that leave mid-command: half a header, half a value.
    for half in [
        &b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nabc"[..],
        b"*2\r\n$3",
    ] {
        let mut c = Conn::open(node.redis).await;
        c.0.write_all(half).await.unwrap();
        drop(c);
    }
    let mut c = Conn::open(node.redis).await;
    c.expect(&cmd(&["GET", "k"]), "$-1\r\n").await;
    c.expect(&cmd(&["SET", "k", "v"]), "+OK\r\n").await;
    node.stop().await;
}

#[tokio::test]
async fn redis_commands_are_counted_by_protocol_in_the_metrics() {
    let node = TestNode::start(Limits::default()).await;
    let mut c = Conn::open(node.redis).await;
    c.expect(&cmd(&["GET", "m"]), "$-1\r\n").await;
    c.expect(&cmd(&["SET", "m", "v"]), "+OK\r\n").await;
    let (_, body) = node.admin_get("/metrics").await;
    for expected in [
        r#"kcache_requests_total{code="OK",op="get",protocol="redis"} 1"#,
        r#"kcache_requests_total{code="OK",op="set",protocol="redis"} 1"#,
        r#"kcache_request_duration_seconds_count{op="get",protocol="redis"} 1"#,
    ] {
        assert!(body.contains(expected), "missing {expected}");
    }
    node.stop().await;
}
