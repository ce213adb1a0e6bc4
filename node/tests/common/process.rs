//! Real kcache-node processes on 127.0.1.N with static membership, for tests of what
//! only a process can do: die by SIGKILL, freeze by SIGSTOP.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kcache_client::proto::cache_client::CacheClient;
use tonic::transport::Channel;

/// A node process, killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port on `ip` (bound and released; the node binds it right after).
pub fn free_port(ip: &str) -> u16 {
    StdListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Spec {
    pub id: String,
    pub ip: String,
    pub grpc: u16,
    pub admin: u16,
}

impl Spec {
    pub fn grpc_addr(&self) -> String {
        format!("{}:{}", self.ip, self.grpc)
    }
}

/// Starts `spec` as a member of `peers` (`id=host:port,…`), R=2, with `extra` flags.
pub fn spawn(spec: &Spec, peers: &str, extra: &[&str]) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_kcache-node"))
        .args(["--node-id", &spec.id])
        .args(["--grpc-addr", &spec.grpc_addr()])
        .args(["--admin-addr", &format!("{}:{}", spec.ip, spec.admin)])
        .args(["--discovery", "static", "--peers", peers])
        .args(["--replication-factor", "2", "--log", "warn"])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Process(child)
}

pub async fn client(spec: &Spec) -> CacheClient<Channel> {
    for _ in 0..100 {
        if let Ok(client) = CacheClient::connect(format!("http://{}", spec.grpc_addr())).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} did not start", spec.id);
}

/// `count` members on 127.0.1.1… with free ports, and their `--peers` list.
pub fn members(count: usize) -> (Vec<Spec>, String) {
    let specs: Vec<Spec> = (0..count)
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
    (specs, peers)
}
