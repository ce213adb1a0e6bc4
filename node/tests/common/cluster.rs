//! Clusters of in-process nodes whose membership the test publishes, as the
//! EndpointSlice controller would; a node is a pod: an id (its name) that survives a
//! restart, and an address that does not.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kcache_client::placement::{Member, View};
use kcache_node::cluster::WriteAck;
use kcache_node::server::{Discovery, NodeConfig, serve};
use kcache_node::store::Limits;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

pub struct Node {
    pub id: String,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), kcache_node::server::Error>>,
}

impl Node {
    pub fn member(&self) -> Member {
        Member {
            id: self.id.clone(),
            address: self.addr.to_string(),
        }
    }

    pub fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect_lazy()
    }

    /// Waits for the node's gRPC health to report the Cache service SERVING, as the
    /// kubelet's readiness probe would see it.
    pub async fn ready(&self) {
        let mut health = HealthClient::new(self.channel());
        let request = HealthCheckRequest {
            service: "kcache.v1.Cache".into(),
        };
        let mut statuses = health.watch(request).await.unwrap().into_inner();
        while let Some(status) = statuses.next().await {
            if status.unwrap().status == ServingStatus::Serving as i32 {
                return;
            }
        }
        panic!("{}: health stream ended before SERVING", self.id);
    }

    /// SIGTERM: drains, hands off, stops.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the node drains within 30 s")
            .unwrap()
            .unwrap();
    }
}

/// Members as the EndpointSlice shows them, and the addresses a client resolves.
pub struct Cluster {
    pub views: watch::Sender<Arc<View>>,
    pub targets: Arc<Mutex<Vec<SocketAddr>>>,
    replication: usize,
    limits: Limits,
    drain_timeout: Duration,
}

impl Cluster {
    /// No members yet; `replication` copies of each key.
    pub fn new(replication: usize) -> Self {
        Self {
            views: watch::Sender::new(Arc::new(View::default())),
            targets: Arc::new(Mutex::new(Vec::new())),
            replication,
            limits: Limits::default(),
            drain_timeout: Duration::from_secs(30),
        }
    }

    /// Nodes started from now on have these limits.
    pub fn with_limits(self, limits: Limits) -> Self {
        Self { limits, ..self }
    }

    /// Nodes started from now on give up handing off after this long.
    pub fn with_drain_timeout(self, drain_timeout: Duration) -> Self {
        Self {
            drain_timeout,
            ..self
        }
    }

    /// Pod `ordinal` of generation `generation`: the same id every time, a new IP.
    pub async fn start(&self, ordinal: u8, generation: u8) -> Node {
        let id = format!("kcache-{ordinal}");
        let ip = format!("127.0.{}.{}", generation + 1, ordinal + 10);
        let grpc = TcpListener::bind(format!("{ip}:0")).await.unwrap();
        let admin = TcpListener::bind(format!("{ip}:0")).await.unwrap();
        let addr = grpc.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let config = NodeConfig {
            discovery: Discovery::Watch(self.views.subscribe()),
            replication: self.replication,
            write_ack: WriteAck::All,
            drain_timeout: self.drain_timeout,
            ..NodeConfig::single(id.clone(), self.limits.clone())
        };
        let task = tokio::spawn(serve(config, grpc, admin, async {
            let _ = stopped.await;
        }));
        Node {
            id,
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Publishes `nodes` as the members, as an EndpointSlice update would.
    pub fn publish(&self, nodes: &[Node]) {
        self.views.send_replace(Arc::new(View::new(
            nodes.iter().map(Node::member).collect(),
        )));
        *self.targets.lock() = nodes.iter().map(|n| n.addr).collect();
    }
}
