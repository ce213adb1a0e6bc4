//! Redis clients no one here wrote — redis-rs, redis-py and redis-cli, plain and (in
//! the emulated cluster mode) their Redis Cluster clients — against the Redis-protocol
//! ports of a 3-node in-process cluster: any key through any node, and a scale event
//! under writes that loses no acknowledged key.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::cluster::{Cluster, Node};
use kcache_client::placement::View;
use kcache_client::proto::{TopologyRequest, cache_client::CacheClient};
use kcache_node::resp::ClusterMode;
use parking_lot::Mutex;
use redis::AsyncCommands;
use tokio::sync::watch;

/// Writes acknowledged between two steps of the scale: counted, not slept.
const WRITES_PER_STEP: usize = 200;

async fn redis_conn(addr: SocketAddr) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Three ready members, published.
async fn three_nodes(cluster: &Cluster) -> Vec<Node> {
    let mut nodes = Vec::new();
    for ordinal in 0..3 {
        let node = cluster.start(ordinal, 0).await;
        nodes.push(node);
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
    let expected = View::new(nodes.iter().map(Node::member).collect()).epoch();
    for node in nodes {
        let mut client = CacheClient::new(node.channel());
        loop {
            let topology = client.topology(TopologyRequest {}).await.unwrap();
            if topology.into_inner().epoch == expected {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rs_reads_any_key_through_any_node_and_a_scale_loses_none() {
    let cluster = Cluster::new(1);
    let mut nodes = three_nodes(&cluster).await;
    let mut first = redis_conn(nodes[0].redis).await;
    let (): () = first.set("greeting", "hello").await.unwrap();
    for node in &nodes {
        let mut conn = redis_conn(node.redis).await;
        let value: Option<String> = conn.get("greeting").await.unwrap();
        assert_eq!(value.as_deref(), Some("hello"), "through {}", node.id);
        let n: i64 = conn.incr("counter", 1).await.unwrap();
        assert!(n >= 1);
    }
    let n: i64 = first.get("counter").await.unwrap();
    assert_eq!(n, 3);
    let (): () = first
        .mset(&[("a", "1"), ("b", "2"), ("c", "3")])
        .await
        .unwrap();
    let values: Vec<Option<String>> = redis_conn(nodes[2].redis)
        .await
        .mget(&["a", "nokey", "c"])
        .await
        .unwrap();
    assert_eq!(values, [Some("1".into()), None, Some("3".into())]);

    // Continuous writes round robin over the members' Redis ports, as through a
    // Service; a write counts when the node answered OK.
    let targets = Arc::new(Mutex::new(
        nodes.iter().map(|n| n.redis).collect::<Vec<_>>(),
    ));
    let running = Arc::new(AtomicBool::new(true));
    let (acked_tx, mut acked) = watch::channel(0usize);
    let writer = tokio::spawn({
        let (targets, running) = (targets.clone(), running.clone());
        async move {
            let mut acknowledged = Vec::new();
            let mut i = 0u64;
            while running.load(Ordering::Relaxed) {
                let addr = {
                    let targets = targets.lock();
                    targets[i as usize % targets.len()]
                };
                let written: redis::RedisResult<()> = async {
                    let mut conn = redis::Client::open(format!("redis://{addr}/"))?
                        .get_multiplexed_async_connection()
                        .await?;
                    conn.set(format!("key-{i}"), format!("value-{i}")).await
                }
                .await;
                if written.is_ok() {
                    acknowledged.push(i);
                    acked_tx.send_modify(|n| *n += 1);
                }
                i += 1;
            }
            acknowledged
        }
    });
    let mut more_writes = async |n: usize| {
        let seen = *acked.borrow_and_update();
        acked.wait_for(|&now| now >= seen + n).await.unwrap();
    };

    more_writes(WRITES_PER_STEP).await;
    let joining = cluster.start(3, 0).await;
    nodes.push(joining);
    cluster.publish(&nodes);
    *targets.lock() = nodes.iter().map(|n| n.redis).collect();
    agreed(&nodes).await;
    more_writes(WRITES_PER_STEP).await;

    let leaving: Vec<Node> = nodes.drain(2..).collect();
    cluster.publish(&nodes);
    *targets.lock() = nodes.iter().map(|n| n.redis).collect();
    futures::future::join_all(leaving.into_iter().map(Node::stop)).await;
    agreed(&nodes).await;
    more_writes(WRITES_PER_STEP).await;
    running.store(false, Ordering::Relaxed);
    let acknowledged = writer.await.unwrap();

    let mut conn = redis_conn(nodes[1].redis).await;
    let mut lost = Vec::new();
    for chunk in acknowledged.chunks(500) {
        let keys: Vec<String> = chunk.iter().map(|i| format!("key-{i}")).collect();
        let values: Vec<Option<String>> = conn.mget(&keys).await.unwrap();
        for (i, value) in chunk.iter().zip(values) {
            if value != Some(format!("value-{i}")) {
                lost.push(*i);
            }
        }
    }
    println!(
        "redis-rs through a 3 -> 4 -> 2 scale: {} acknowledged, {} lost",
        acknowledged.len(),
        lost.len()
    );
    assert_eq!(lost, Vec::<u64>::new(), "acknowledged keys lost");
    cluster.publish(&[]);
    futures::future::join_all(nodes.into_iter().map(Node::stop)).await;
}

/// Runs the redis-py script in `phase` against `ports`; its last line of output.
async fn redis_py(phase: &str, nodes: &[Node]) -> String {
    let python = common::python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/redis_py.py");
    let addrs: Vec<String> = nodes.iter().map(|n| n.redis.to_string()).collect();
    let phase = phase.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(phase)
            .args(addrs)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "redis-py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().last().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_writes_through_every_node_and_reads_all_back_after_a_scale() {
    let cluster = Cluster::new(1);
    let mut nodes = three_nodes(&cluster).await;
    assert_eq!(redis_py("write", &nodes).await, "written 3000");
    nodes.push(cluster.start(3, 0).await);
    cluster.publish(&nodes);
    agreed(&nodes).await;
    let leaving = nodes.remove(1);
    cluster.publish(&nodes);
    leaving.stop().await;
    agreed(&nodes).await;
    assert_eq!(redis_py("check", &nodes).await, "found 3000 of 3000");
    cluster.publish(&[]);
    futures::future::join_all(nodes.into_iter().map(Node::stop)).await;
}

/// redis-cli with `args` against `addr`; its standard output.
async fn redis_cli(addr: SocketAddr, args: &[&str]) -> String {
    let mut command = Command::new("redis-cli");
    command
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("redis-cli runs (Debian redis-tools; scripts/test.sh installs it)");
    assert!(output.status.success(), "redis-cli {args:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_talks_to_every_node_of_a_cluster() {
    let cluster = Cluster::new(2);
    let nodes = three_nodes(&cluster).await;
    let (a, b, c) = (nodes[0].redis, nodes[1].redis, nodes[2].redis);
    assert_eq!(
        redis_cli(a, &["SET", "user:1", "Ada Lovelace", "EX", "600"]).await,
        "OK\n"
    );
    assert_eq!(redis_cli(b, &["GET", "user:1"]).await, "Ada Lovelace\n");
    assert_eq!(
        redis_cli(c, &["TTL", "user:1"])
            .await
            .trim()
            .parse::<u32>()
            .map(|t| t > 590),
        Ok(true)
    );
    assert_eq!(redis_cli(c, &["INCRBY", "hits", "5"]).await, "5\n");
    assert_eq!(redis_cli(a, &["INCR", "hits"]).await, "6\n");
    assert_eq!(
        redis_cli(b, &["DEL", "user:1", "hits", "nokey"]).await,
        "2\n"
    );
    assert_eq!(redis_cli(a, &["GET", "user:1"]).await, "\n");
    // redis-cli prints a blank line after an error, for redis-server too.
    assert_eq!(
        redis_cli(a, &["NOSUCH", "x"]).await,
        "ERR unknown command 'NOSUCH', with args beginning with: 'x' \n\n"
    );
    assert_eq!(redis_cli(b, &["-3", "PING"]).await, "PONG\n");
    let info = redis_cli(c, &["INFO", "server"]).await;
    assert!(info.contains("redis_version:7.2.0"), "{info}");
    // A pipe of a thousand commands in RESP, as `redis-cli --pipe` sends a bulk load.
    let mut input = String::new();
    for i in 0..1000 {
        input.push_str(&format!("SET bulk:{i} {i}\n"));
    }
    let mut pipe = std::process::Command::new("redis-cli");
    pipe.args([
        "-h",
        &a.ip().to_string(),
        "-p",
        &a.port().to_string(),
        "--pipe",
    ])
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped());
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = pipe.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(report.contains("errors: 0, replies: 1000"), "{report}");
    assert_eq!(redis_cli(c, &["GET", "bulk:999"]).await, "999\n");
    cluster.publish(&[]);
    futures::future::join_all(nodes.into_iter().map(Node::stop)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_clients_work_against_the_emulated_cluster_mode() {
    let cluster = Cluster::new(1).with_redis_cluster_mode(ClusterMode::Emulated);
    let nodes = three_nodes(&cluster).await;
    // redis-rs's cluster client, seeded with one node: it learns the slots from
    // CLUSTER SLOTS and sends every key there; that node forwards to the owners.
    let client =
        redis::cluster::ClusterClient::new(vec![format!("redis://{}/", nodes[1].redis)]).unwrap();
    let mut conn = client.get_async_connection().await.unwrap();
    for i in 0..300 {
        let (): () = conn.set(format!("rc:{i}"), i).await.unwrap();
    }
    for node in &nodes {
        let mut plain = redis_conn(node.redis).await;
        let values: Vec<Option<i64>> = plain.mget(&["rc:0", "rc:150", "rc:299"]).await.unwrap();
        assert_eq!(
            values,
            [Some(0), Some(150), Some(299)],
            "through {}",
            node.id
        );
    }
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg("{user1000}.following")
        .query_async(&mut redis_conn(nodes[0].redis).await)
        .await
        .unwrap();
    assert_eq!(slot, 3443);
    assert_eq!(redis_py("cluster", &nodes).await, "cluster 300 of 300");
    cluster.publish(&[]);
    futures::future::join_all(nodes.into_iter().map(Node::stop)).await;
}
