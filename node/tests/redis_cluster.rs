//! The Redis port's `cluster` mode against a 3-node in-process cluster: MOVED to a
//! slot's primary at its Redis address, CROSSSLOT, READONLY reads at a replica, and
//! Redis Cluster clients no one here wrote (redis-rs cluster, redis-py RedisCluster)
//! sending each key straight to its owner, through a scale from three members to four
//! with every key written before read back after.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::cluster::{Cluster, Node};
use kcache_client::placement::{View, key_slot};
use kcache_client::proto::{TopologyRequest, cache_client::CacheClient};
use kcache_node::resp::ClusterMode;
use redis::AsyncCommands;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::TcpStream;

/// Replication factor of the clusters here: CLUSTER SLOTS then lists a replica a slot.
const REPLICATION: usize = 2;

/// Members of `nodes`, as every node places keys once it has seen them.
fn view_of(nodes: &[Node]) -> View {
    View::new(nodes.iter().map(Node::member).collect())
}

/// Three ready members of a `cluster`-mode cluster, published.
async fn three_nodes(cluster: &Cluster) -> Vec<Node> {
    let mut nodes = Vec::new();
    for ordinal in 0..3 {
        nodes.push(cluster.start(ordinal, 0).await);
    }
    cluster.publish(&nodes);
    for node in &nodes {
        node.ready().await;
    }
    agreed(&nodes).await;
    nodes
}

/// Waits until every node places keys on exactly `nodes`' members.
async fn agreed(nodes: &[Node]) {
    let expected = view_of(nodes).epoch();
    for node in nodes {
        let mut client = CacheClient::new(node.channel());
        while client
            .topology(TopologyRequest {})
            .await
            .unwrap()
            .into_inner()
            .epoch
            != expected
        {
            tokio::task::yield_now().await;
        }
    }
}

/// A key with `prefix` whose slot's primary is `owner`.
fn key_of(view: &View, owner: &str, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| view.owners(k.as_bytes(), 1)[0].id == owner)
        .unwrap()
}

/// One RESP connection that shows replies as the bytes a server sent.
struct Raw(AsyncBufReader<TcpStream>);

impl Raw {
    async fn connect(addr: SocketAddr) -> Self {
        Self(AsyncBufReader::new(TcpStream::connect(addr).await.unwrap()))
    }

    /// Sends `args` as a command; the reply's first line, and a bulk string's body.
    async fn call(&mut self, args: &[&str]) -> String {
        use tokio::io::AsyncBufReadExt;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.0
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .unwrap();
        let mut line = String::new();
        self.0.read_line(&mut line).await.unwrap();
        if let Some(len) = line
            .strip_prefix('$')
            .and_then(|n| n.trim().parse::<usize>().ok())
        {
            let mut body = vec![0; len + 2];
            self.0.read_exact(&mut body).await.unwrap();
            line.push_str(&String::from_utf8(body).unwrap());
        }
        line
    }
}

/// Waits until every node answers MOVED for a key another member is the primary of:
/// membership has been still long enough (`REDIRECT_SETTLE`) on all of them.
async fn redirecting(nodes: &[Node]) {
    let view = view_of(nodes);
    let wait = async {
        for (i, node) in nodes.iter().enumerate() {
            let other = &nodes[(i + 1) % nodes.len()].id;
            let key = key_of(&view, other, "probe:");
            let mut conn = Raw::connect(node.redis).await;
            while !conn.call(&["GET", &key]).await.starts_with("-MOVED ") {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("every node redirects within 30 s of the last membership change");
}

/// Requests the nodes forwarded to another member, in all.
async fn forwarded(nodes: &[Node]) -> f64 {
    let mut total = 0.0;
    for node in nodes {
        total += node.metric_sum("kcache_forwarded_requests_total").await;
    }
    total
}

fn cluster_mode() -> Cluster {
    Cluster::new(REPLICATION).with_redis_cluster_mode(ClusterMode::Cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answers_moved_with_the_primarys_redis_address_for_a_key_it_does_not_own() {
    let cluster = cluster_mode();
    let nodes = three_nodes(&cluster).await;
    redirecting(&nodes).await;
    let view = view_of(&nodes);
    let key = key_of(&view, "kcache-1", "user:");
    let slot = key_slot(key.as_bytes());
    let mut at_0 = Raw::connect(nodes[0].redis).await;
    assert_eq!(
        at_0.call(&["SET", &key, "Ada"]).await,
        format!("-MOVED {slot} {}\r\n", nodes[1].redis)
    );
    let mut at_1 = Raw::connect(nodes[1].redis).await;
    assert_eq!(at_1.call(&["SET", &key, "Ada"]).await, "+OK\r\n");
    assert_eq!(at_1.call(&["GET", &key]).await, "$3\r\nAda\r\n");
    assert_eq!(
        at_0.call(&["CLUSTER", "KEYSLOT", &key]).await,
        format!(":{slot}\r\n")
    );

    // Keys of two slots in one command, wherever it is sent.
    let other = key_of(&view, "kcache-1", "order:");
    assert_ne!(key_slot(other.as_bytes()), slot);
    let crossslot = "-CROSSSLOT Keys in request don't hash to the same slot\r\n";
    assert_eq!(at_1.call(&["MGET", &key, &other]).await, crossslot);
    assert_eq!(at_0.call(&["DEL", &key, &other]).await, crossslot);
    // A hash tag puts keys in one slot: served by its primary.
    let tag = (0..)
        .map(|i| format!("{{cart{i}}}"))
        .find(|t| view.owners(t.as_bytes(), 1)[0].id == "kcache-1")
        .unwrap();
    let (a, b) = (format!("{tag}:a"), format!("{tag}:b"));
    assert_eq!(at_1.call(&["MSET", &a, "1", &b, "2"]).await, "+OK\r\n");

    // A replica serves reads on a READONLY connection, and redirects writes.
    let replica = view.owners(key.as_bytes(), REPLICATION)[1].id.clone();
    let replica = nodes.iter().find(|n| n.id == replica).unwrap();
    let mut at_replica = Raw::connect(replica.redis).await;
    let moved = format!("-MOVED {slot} {}\r\n", nodes[1].redis);
    assert_eq!(at_replica.call(&["GET", &key]).await, moved);
    assert_eq!(at_replica.call(&["READONLY"]).await, "+OK\r\n");
    assert_eq!(at_replica.call(&["GET", &key]).await, "$3\r\nAda\r\n");
    assert_eq!(at_replica.call(&["SET", &key, "Grace"]).await, moved);
    assert_eq!(at_replica.call(&["READWRITE"]).await, "+OK\r\n");
    assert_eq!(at_replica.call(&["GET", &key]).await, moved);
    cluster.publish(&[]);
    futures::future::join_all(nodes.into_iter().map(Node::stop)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_slots_reports_every_slots_owners_at_their_redis_addresses() {
    let cluster = cluster_mode();
    let nodes = three_nodes(&cluster).await;
    let view = view_of(&nodes);
    let address = |id: &str| {
        let node = nodes.iter().find(|n| n.id == id).unwrap();
        (node.redis.ip().to_string(), i64::from(node.redis.port()))
    };
    // The reply is a megabyte or two, built by a debug build on a machine running other
    // tests: more than redis-rs's default 500 ms may pass (a release node answers in a
    // few milliseconds); this test is about its content.
    let patient = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(std::time::Duration::from_secs(30)));
    let mut conn = redis::Client::open(format!("redis://{}/", nodes[2].redis))
        .unwrap()
        .get_multiplexed_async_connection_with_config(&patient)
        .await
        .unwrap();
    let ranges: redis::Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await
        .unwrap();
    let redis::Value::Array(ranges) = ranges else {
        panic!("CLUSTER SLOTS: {ranges:?}")
    };
    let mut next = 0i64;
    for range in ranges {
        let redis::Value::Array(range) = range else {
            panic!("a range: {range:?}")
        };
        let (redis::Value::Int(start), redis::Value::Int(end)) = (&range[0], &range[1]) else {
            panic!("a range's bounds: {range:?}")
        };
        assert_eq!(*start, next, "ranges cover the slots in order");
        let reported: Vec<(String, i64)> = range[2..]
            .iter()
            .map(|node| match node {
                redis::Value::Array(fields) => match (&fields[0], &fields[1]) {
                    (redis::Value::BulkString(ip), redis::Value::Int(port)) => {
                        (String::from_utf8(ip.clone()).unwrap(), *port)
                    }
                    other => panic!("a node: {other:?}"),
                },
                other => panic!("a node: {other:?}"),
            })
            .collect();
        for slot in *start..=*end {
            let owners: Vec<_> = view
                .slot_owners(slot as u16, REPLICATION)
                .iter()
                .map(|m| address(&m.id))
                .collect();
            assert_eq!(reported, owners, "slot {slot}");
        }
        next = end + 1;
    }
    assert_eq!(next, 16_384);
    cluster.publish(&[]);
    futures::future::join_all(nodes.into_iter().map(Node::stop)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rs_cluster_goes_straight_to_owners_through_a_scale_up_and_down() {
    let cluster = cluster_mode();
    let mut nodes = three_nodes(&cluster).await;
    redirecting(&nodes).await;
    let client =
        redis::cluster::ClusterClient::new(vec![format!("redis://{}/", nodes[0].redis)]).unwrap();
    let mut conn = client.get_async_connection().await.unwrap();
    let before = forwarded(&nodes).await;
    for i in 0..1_000 {
        let (): () = conn.set(format!("rs:{i}"), i).await.unwrap();
    }
    assert_eq!(
        forwarded(&nodes).await,
        before,
        "every write went straight to its primary"
    );

    nodes.push(cluster.start(3, 0).await);
    cluster.publish(&nodes);
    nodes[3].ready().await;
    agreed(&nodes).await;
    let read_all = async |conn: &mut redis::cluster_async::ClusterConnection| {
        let mut missing = Vec::new();
        for i in 0..1_000 {
            let value: Option<i64> = conn.get(format!("rs:{i}")).await.unwrap();
            if value != Some(i) {
                missing.push(i);
            }
        }
        missing
    };
    // While membership settles, nodes forward; then they redirect, and the client's
    // table (of three members) is stale until MOVED teaches it the fourth.
    assert_eq!(read_all(&mut conn).await, Vec::<i64>::new());
    redirecting(&nodes).await;
    let before = forwarded(&nodes).await;
    assert_eq!(read_all(&mut conn).await, Vec::<i64>::new());
    assert_eq!(
        forwarded(&nodes).await,
        before,
        "MOVED, not forwarding, took the reads to the newcomer"
    );
    let four = view_of(&nodes);
    let moved_to_newcomer = (0..1_000)
        .filter(|i| four.owners(format!("rs:{i}").as_bytes(), 1)[0].id == "kcache-3")
        .count();
    assert!(moved_to_newcomer > 100, "{moved_to_newcomer}");

    // And down to three again, without kcache-1: the client's connections to it fail,
    // and it learns the slots anew.
    let leaving = nodes.remove(1);
    cluster.publish(&nodes);
    leaving.stop().await;
    agreed(&nodes).await;
    assert_eq!(read_all(&mut conn).await, Vec::<i64>::new());
    redirecting(&nodes).await;
    assert_eq!(read_all(&mut conn).await, Vec::<i64>::new());
    cluster.publish(&[]);
    futures::future::join_all(nodes.into_iter().map(Node::stop)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_cluster_reads_every_key_back_through_a_scale_from_three_to_four() {
    let cluster = cluster_mode();
    let mut nodes = three_nodes(&cluster).await;
    redirecting(&nodes).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/redis_py.py");
    let mut child = Command::new(common::python())
        .arg(script)
        .arg("scale")
        .arg(nodes[0].redis.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = move || {
        tokio::task::block_in_place(|| lines.next().expect("redis-py ended early").unwrap())
    };
    let before = forwarded(&nodes).await;
    assert_eq!(next_line(), "written 3000");
    assert_eq!(
        forwarded(&nodes).await,
        before,
        "every write went straight to its primary"
    );

    nodes.push(cluster.start(3, 0).await);
    cluster.publish(&nodes);
    nodes[3].ready().await;
    agreed(&nodes).await;
    let expected = "found 3000 of 3000, wrote and read 300 of 300";
    writeln!(stdin, "read").unwrap();
    assert_eq!(next_line(), expected, "while membership settles");
    redirecting(&nodes).await;
    let before = forwarded(&nodes).await;
    writeln!(stdin, "read").unwrap();
    assert_eq!(next_line(), expected, "once nodes redirect to the newcomer");
    assert_eq!(
        forwarded(&nodes).await,
        before,
        "MOVED, not forwarding, took the calls to the newcomer"
    );
    drop(stdin);
    let status = tokio::task::block_in_place(|| child.wait()).unwrap();
    assert!(status.success(), "redis-py: {status}");
    cluster.publish(&[]);
    futures::future::join_all(nodes.into_iter().map(Node::stop)).await;
}
