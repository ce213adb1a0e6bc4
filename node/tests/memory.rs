//! The real binary under a flood of writes: resident memory stays near the limit.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use kcache_client::proto::{MultiSetRequest, SetRequest, cache_client::CacheClient};

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts kcache-node on ephemeral ports and returns it with its gRPC address, read
/// from its JSON start-up log line.
fn start_node(max_memory: &str) -> (Node, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kcache-node"))
        .args(["--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .args(["--max-memory", max_memory, "--log-format", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("kcache-node starts");
    let stdout = child.stdout.take().unwrap();
    let node = Node(child);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.split("\"grpc\":\"").nth(1) {
            let addr = rest.split('"').next().unwrap().to_owned();
            return (node, addr);
        }
    }
    panic!("kcache-node exited before serving");
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// 1,000 entries of 16-byte keys and 100-byte values.
fn batch(n: u64) -> MultiSetRequest {
    let items = (0..1_000u64)
        .map(|i| SetRequest {
            key: format!("{:016x}", n.wrapping_mul(1_000).wrapping_add(i))
                .into_bytes()
                .into(),
            value: vec![b'x'; 100].into(),
            ..SetRequest::default()
        })
        .collect();
    MultiSetRequest { items }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_writes_keeps_resident_memory_within_the_limit_plus_base() {
    let limit: u64 = std::env::var("FLOOD_MIB").map_or(32, |v| v.parse().unwrap()) << 20;
    let (node, addr) = start_node(&format!("{}MiB", limit >> 20));
    let mut client = CacheClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    // Warm up the request path with one full-size batch so the base includes the
    // server's buffers, then measure what the entries add.
    client.multi_set(batch(u64::MAX)).await.unwrap();
    let base = rss_bytes(node.0.id());
    // 300,000 entries of 16 + 100 bytes: about three times what fits.
    for n in 0..(limit >> 20) * 300 / 16 {
        client.multi_set(batch(n)).await.unwrap();
    }
    let stats = client
        .stats(kcache_client::proto::StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    let stats = &stats.nodes[0];
    let growth = rss_bytes(node.0.id()).saturating_sub(base);
    eprintln!(
        "items {} charged {} evictions {} rss growth {} ({:.3} x limit)",
        stats.items,
        stats.bytes,
        stats.evictions,
        growth,
        growth as f64 / limit as f64
    );
    assert!(stats.bytes <= limit);
    assert!(stats.evictions > 150_000, "the flood overflowed the limit");
    assert!(
        growth as f64 <= limit as f64 * 1.05,
        "resident memory grew {growth} bytes for a {limit}-byte limit"
    );
}
