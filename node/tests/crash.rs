//! Real kcache-node processes with static membership: a member killed with SIGKILL
//! loses no acknowledged key (R=2), and a restarted member refills from its peers.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kcache_client::proto::{
    MultiGetRequest, MultiSetRequest, SetRequest, StatsRequest, cache_client::CacheClient,
};
use tonic::transport::Channel;

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port on `ip` (bound and released; the node binds it right after).
fn free_port(ip: &str) -> u16 {
    StdListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Spec {
    id: String,
    ip: String,
    grpc: u16,
    admin: u16,
}

impl Spec {
    fn grpc_addr(&self) -> String {
        format!("{}:{}", self.ip, self.grpc)
    }
}

fn spawn(spec: &Spec, peers: &str) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_kcache-node"))
        .args(["--node-id", &spec.id])
        .args(["--grpc-addr", &spec.grpc_addr()])
        .args(["--admin-addr", &format!("{}:{}", spec.ip, spec.admin)])
        .args(["--discovery", "static", "--peers", peers])
        .args(["--replication-factor", "2", "--log", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Process(child)
}

async fn client(spec: &Spec) -> CacheClient<Channel> {
    for _ in 0..100 {
        if let Ok(client) = CacheClient::connect(format!("http://{}", spec.grpc_addr())).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} did not start", spec.id);
}

fn key(i: u64) -> bytes::Bytes {
    format!("key-{i:06}").into_bytes().into()
}

async fn readable(client: &mut CacheClient<Channel>, count: u64) -> usize {
    let mut found = 0;
    for start in (0..count).step_by(500) {
        let keys = (start..(start + 500).min(count)).map(key).collect();
        let values = client
            .multi_get(MultiGetRequest { keys })
            .await
            .unwrap()
            .into_inner()
            .values;
        found += values.iter().filter(|v| v.found).count();
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_loses_no_acknowledged_key_and_refills_when_restarted() {
    let specs: Vec<Spec> = (0..3)
        .map(|i| {
            let ip = format!("127.0.1.{}", i + 1);
            Spec {
                id: format!("kcache-{i}"),
                grpc: free_port(&ip),
                admin: free_port(&ip),
                ip,
            }
        })
        .collect();
    let peers = specs
        .iter()
        .map(|s| format!("{}={}", s.id, s.grpc_addr()))
        .collect::<Vec<_>>()
        .join(",");
    let mut processes: Vec<Option<Process>> =
        specs.iter().map(|s| Some(spawn(s, &peers))).collect();

    const KEYS: u64 = 10_000;
    let mut writer = client(&specs[0]).await;
    for start in (0..KEYS).step_by(500) {
        let items = (start..start + 500)
            .map(|i| SetRequest {
                key: key(i),
                value: vec![b'v'; 100].into(),
                ..SetRequest::default()
            })
            .collect();
        let results = writer
            .multi_set(MultiSetRequest { items })
            .await
            .unwrap()
            .into_inner()
            .results;
        assert!(results.iter().all(|r| r.stored));
    }
    for spec in &specs[1..] {
        assert_eq!(
            readable(&mut client(spec).await, KEYS).await,
            KEYS as usize,
            "via {}",
            spec.id
        );
    }

    // SIGKILL: no drain, no handoff.
    processes[2] = None;
    for spec in &specs[..2] {
        assert_eq!(
            readable(&mut client(spec).await, KEYS).await,
            KEYS as usize,
            "via {} with kcache-2 dead",
            spec.id
        );
    }

    // Restarted with the same identity, it asks its peers for its keys.
    processes[2] = Some(spawn(&specs[2], &peers));
    let mut restarted = client(&specs[2]).await;
    let mut items = 0;
    for _ in 0..100 {
        let stats = restarted.stats(StatsRequest {}).await.unwrap().into_inner();
        items = stats
            .nodes
            .iter()
            .find(|n| n.node_id == "kcache-2")
            .unwrap()
            .items;
        if items > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(readable(&mut restarted, KEYS).await, KEYS as usize);
    let stats = restarted.stats(StatsRequest {}).await.unwrap().into_inner();
    let total: u64 = stats.nodes.iter().map(|n| n.items).sum();
    eprintln!(
        "after restart: {:?}",
        stats
            .nodes
            .iter()
            .map(|n| (&n.node_id, n.items))
            .collect::<Vec<_>>()
    );
    assert!(items > 0, "the restarted member refilled");
    assert_eq!(total, 2 * KEYS, "two copies of every key again");
    drop(processes);
}
