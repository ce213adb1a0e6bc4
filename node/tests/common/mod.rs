//! A node on 127.0.0.1 with ephemeral ports, for black-box tests over real sockets.
#![allow(dead_code, clippy::unwrap_used)]

pub mod cluster;
pub mod process;

use std::net::SocketAddr;

use kcache_client::proto::cache_client::CacheClient;
use kcache_node::server::{NodeConfig, serve_with_redis};
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
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
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
