//! A node on 127.0.0.1 with ephemeral ports, for black-box tests over real sockets.
#![allow(dead_code, clippy::unwrap_used)]

pub mod cluster;
pub mod netns;
pub mod process;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kcache_client::placement::{Member, View};
use kcache_client::proto::cache_client::CacheClient;
use kcache_node::server::{Discovery, NodeConfig, serve, serve_with_redis};
use kcache_node::store::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub struct TestNode {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    /// The Redis-protocol port.
    pub redis: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), kcache_node::server::Error>>,
}

impl TestNode {
    pub async fn start(limits: Limits) -> Self {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let redis = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, admin_addr) = (grpc.local_addr().unwrap(), admin.local_addr().unwrap());
        let redis_addr = redis.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let config = NodeConfig::single("test-node-0", limits);
        let task = tokio::spawn(serve_with_redis(config, grpc, admin, Some(redis), async {
            let _ = stopped.await;
        }));
        Self {
            grpc: grpc_addr,
            admin: admin_addr,
            redis: redis_addr,
            stop: Some(stop),
            task,
        }
    }

    pub async fn raw(&self) -> CacheClient<Channel> {
        CacheClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }

    pub fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect_lazy()
    }

    /// An HTTP/1.0 GET on the admin port: (status code, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(self.admin).await.unwrap();
        let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (status, body)
    }

    /// Signals shutdown and waits for the node to stop.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

/// A peer that accepts HTTP/2 and never answers: calls to it hang until their own
/// deadline (a frozen node, as far as its callers can tell).
pub async fn silent_peer() -> String {
    silent_peer_counting(Arc::new(AtomicUsize::new(0))).await
}

/// As [`silent_peer`], counting the connections it accepts in `accepted`.
pub async fn silent_peer_counting(accepted: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(tcp).await.unwrap();
                let mut held = Vec::new();
                while let Some(Ok(call)) = conn.accept().await {
                    held.push(call);
                }
            });
        }
    });
    address
}

/// Node "a" on 127.0.0.1, serving until the test ends, in a static two-member cluster
/// with "b" at `b` (usually a fake peer: silent or failing); `config` is a's
/// configuration but for its discovery. Returns a's address and the cluster's view.
pub async fn node_beside(b: String, config: NodeConfig) -> (String, View) {
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let here = grpc.local_addr().unwrap().to_string();
    let members = vec![
        Member {
            id: "a".into(),
            address: here.clone(),
        },
        Member {
            id: "b".into(),
            address: b,
        },
    ];
    let config = NodeConfig {
        discovery: Discovery::Static(members.clone()),
        ..config
    };
    tokio::spawn(serve(config, grpc, admin, std::future::pending()));
    (here, View::new(members))
}

/// The Python of `scripts/test.sh`'s venv (`KCACHE_VENV`), which has redis-py.
pub fn python() -> String {
    let python = std::env::var("KCACHE_VENV")
        .map(|venv| format!("{venv}/bin/python"))
        .unwrap_or_else(|_| "python3".into());
    let has_redis = std::process::Command::new(&python)
        .args(["-c", "import redis"])
        .status();
    assert!(
        has_redis.is_ok_and(|s| s.success()),
        "{python} cannot import redis: run scripts/test.sh (it installs redis-py into .venv) or pip install -r scripts/requirements.txt"
    );
    python
}
