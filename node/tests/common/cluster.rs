//! Clusters of in-process nodes whose membership the test publishes, as the
//! EndpointSlice controller would; a node is a pod: an id (its name) that survives a
//! restart, and an address that does not.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kcache_client::placement::{Member, View};
use kcache_node::cluster::WriteAck;
use kcache_node::resp::ClusterMode;
use kcache_node::server::{Discovery, NodeConfig, serve_with_redis};
use kcache_node::store::Limits;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    pub admin: SocketAddr,
    /// The Redis-protocol port.
    pub redis: SocketAddr,
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

    /// The value of an unlabelled metric on this node's /metrics (0 when absent).
    pub async fn metric(&self, name: &str) -> u64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map_or(0, |n| n.trim().parse().unwrap())
    }

    /// The sum of a metric's samples over every label set (0 when absent).
    pub async fn metric_sum(&self, name: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.split([' ', '{']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
            .sum()
    }

    /// The node's /metrics, as Prometheus would scrape it.
    async fn metrics(&self) -> String {
        let mut stream = tokio::net::TcpStream::connect(self.admin).await.unwrap();
        let request = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    /// Handoff passes this node has finished (each member change it saw starts one).
    pub async fn handoff_passes(&self) -> u64 {
        self.metric("kcache_handoff_duration_seconds_count").await
    }

    /// Waits until this node has finished `n` handoff passes.
    pub async fn handoff_passes_reach(&self, n: u64) {
        let wait = async {
            while self.handoff_passes().await < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("{}: fewer than {n} handoff passes in 30 s", self.id));
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
    anti_entropy: Option<Duration>,
    redis_cluster_mode: ClusterMode,
    /// In the `cluster` mode, the Redis port every node serves on: the first node's,
    /// as pods of one StatefulSet share one port number.
    redis_port: Mutex<Option<u16>>,
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
            anti_entropy: None,
            redis_cluster_mode: ClusterMode::Standalone,
            redis_port: Mutex::new(None),
        }
    }

    /// Nodes started from now on answer CLUSTER commands on their Redis port so.
    pub fn with_redis_cluster_mode(self, redis_cluster_mode: ClusterMode) -> Self {
        Self {
            redis_cluster_mode,
            ..self
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

    /// Nodes started from now on compare and repair their copies this often.
    pub fn with_anti_entropy(self, every: Duration) -> Self {
        Self {
            anti_entropy: Some(every),
            ..self
        }
    }

    /// Pod `ordinal` of generation `generation`: the same id every time, a new IP.
    pub async fn start(&self, ordinal: u8, generation: u8) -> Node {
        self.start_watching(ordinal, generation, self.views.subscribe())
            .await
    }

    /// As [`Cluster::start`], but the node sees the members `views` reports (tests
    /// that give nodes different views of the cluster: a partition, a late update).
    pub async fn start_watching(
        &self,
        ordinal: u8,
        generation: u8,
        views: watch::Receiver<Arc<View>>,
    ) -> Node {
        let id = format!("kcache-{ordinal}");
        // The `cluster` mode reports every member at its host and one Redis port: its
        // nodes share that port, on addresses of their own (127.3.g.o) that no other
        // test's listener holds.
        let shared_port = self.redis_cluster_mode == ClusterMode::Cluster;
        let ip = if shared_port {
            format!("127.3.{generation}.{}", ordinal + 10)
        } else {
            format!("127.0.{}.{}", generation + 1, ordinal + 10)
        };
        let grpc = TcpListener::bind(format!("{ip}:0")).await.unwrap();
        let admin = TcpListener::bind(format!("{ip}:0")).await.unwrap();
        let port = self.redis_port.lock().unwrap_or(0);
        let redis = TcpListener::bind(format!("{ip}:{port}")).await.unwrap();
        if shared_port {
            *self.redis_port.lock() = Some(redis.local_addr().unwrap().port());
        }
        let addr = grpc.local_addr().unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let redis_addr = redis.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let config = NodeConfig {
            discovery: Discovery::Watch(views),
            replication: self.replication,
            write_ack: WriteAck::All,
            drain_timeout: self.drain_timeout,
            anti_entropy: self.anti_entropy,
            redis_cluster_mode: self.redis_cluster_mode,
            ..NodeConfig::single(id.clone(), self.limits.clone())
        };
        let task = tokio::spawn(serve_with_redis(config, grpc, admin, Some(redis), async {
            let _ = stopped.await;
        }));
        Node {
            id,
            addr,
            admin: admin_addr,
            redis: redis_addr,
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
