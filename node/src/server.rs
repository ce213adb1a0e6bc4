//! Wiring: one store, the gRPC server (Cache, health, reflection v1 and v1alpha), the
//! admin HTTP server and the expiry sweeper, all stopped by one shutdown future.
//! Takes already-bound listeners so tests can bind 127.0.0.1:0.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kcache_client::placement::{Member, View};
use kcache_client::proto::{self, cache_server::CacheServer, peer_server::PeerServer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;

use crate::cluster::{
    Cluster, PeerService, WriteAck, antientropy, kubernetes, membership, rebalance,
};
use crate::metrics::Metrics;
use crate::security::{PeerGate, Security, SecurityConfig, SecurityMetrics};
use crate::service::{CacheService, MAX_BATCH, NodeInfo};
use crate::store::{Limits, Store};

/// How often the active-expiry sweep runs, and how many slots per shard it examines
/// each time: about 160,000 slots a second, a pass over a million entries in seconds,
/// at well under a millisecond of one core per run.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
const SWEEP_BUDGET: usize = 256;
/// Room for the protobuf framing around the values of one request.
const MESSAGE_SLACK: usize = 64 << 10;
/// Streams one client connection may have open at once (SETTINGS_MAX_CONCURRENT_
/// STREAMS): a client past it waits for a stream to end instead of the node taking
/// on calls without limit; ample for a pooled client's pipelining (HTTP/2 clients
/// commonly default to 100).
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// How long a member that (re)joins a cluster may spend learning the members and
/// fetching its entries from its peers before it turns ready anyway.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a node learns its fellow members.
#[derive(Debug, Clone)]
pub enum Discovery {
    /// This node alone.
    None,
    /// A fixed list (`--peers`).
    Static(Vec<Member>),
    /// A list the embedding program changes (tests scale clusters in-process).
    Watch(watch::Receiver<Arc<View>>),
    /// The EndpointSlices of a headless Service.
    Kubernetes { service: String, namespace: String },
}

/// What a node is.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: String,
    pub limits: Limits,
    pub discovery: Discovery,
    pub replication: usize,
    pub write_ack: WriteAck,
    pub drain_timeout: Duration,
    /// How often owners compare and repair their copies; `None`: never.
    pub anti_entropy: Option<Duration>,
    /// host:port peers reach this node at; the gRPC listener's address when unset.
    pub advertise: Option<String>,
    /// TLS and token files; none (plaintext, open) by default.
    pub security: SecurityConfig,
    /// How the Redis port (when there is one) presents the cluster.
    pub redis_cluster_mode: crate::resp::ClusterMode,
    /// Hold the process's resident memory near `limits.max_memory` above its base
    /// ([`crate::memory`]): on in the node binary, off for nodes a test runs in its
    /// own process (resident memory is the whole process's).
    pub memory_guard: bool,
}

impl NodeConfig {
    /// A node on its own with these limits.
    pub fn single(node_id: impl Into<String>, limits: Limits) -> Self {
        Self {
            node_id: node_id.into(),
            limits,
            discovery: Discovery::None,
            replication: 1,
            write_ack: WriteAck::All,
            drain_timeout: Duration::from_secs(30),
            anti_entropy: Some(Duration::from_secs(30)),
            advertise: None,
            security: SecurityConfig::default(),
            redis_cluster_mode: crate::resp::ClusterMode::Standalone,
            memory_guard: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("Kubernetes client: {0}")]
    Kubernetes(#[from] kube::Error),
    #[error("credentials: {0}")]
    Security(#[from] crate::security::Error),
}

/// Serves until `shutdown` completes, then turns not-ready, stops accepting, lets
/// in-flight requests finish and returns.
pub async fn serve(
    config: NodeConfig,
    grpc: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    serve_with_redis(config, grpc, admin, None, shutdown).await
}

/// [`serve`], plus the Redis-protocol port on `redis` when given.
pub async fn serve_with_redis(
    config: NodeConfig,
    grpc: TcpListener,
    admin: TcpListener,
    redis: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let store = Arc::new(Store::new(config.limits.clone()));
    let metrics = Metrics::new(store.clone());
    let address = config
        .advertise
        .clone()
        .unwrap_or(grpc.local_addr()?.to_string());
    let info = NodeInfo {
        node_id: config.node_id.clone(),
        address: address.clone(),
        started: Instant::now(),
    };
    let me = Member {
        id: config.node_id.clone(),
        address,
    };
    let grpc_port = grpc.local_addr()?.port();
    // A member of a cluster turns ready (gRPC health and /readyz alike) only once it
    // holds the entries it will own, so a rollout never moves on from an empty node.
    let clustered = !matches!(config.discovery, Discovery::None);
    let security = Security::load(&config.security, clustered, SecurityMetrics::new())?;
    metrics.register(security.metrics.collectors());
    let cluster = Arc::new(start_membership(&config, me, grpc_port).await?);
    cluster.peers.secure(
        security.peer_tls.clone(),
        security.peer_token.clone(),
        security.node_token.clone(),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(crate::security::reload::run(
        config.security.clone(),
        security.clone(),
        stop_rx.clone(),
    ));
    let ready = Arc::new(AtomicBool::new(!clustered));

    let (health, health_service) = tonic_health::server::health_reporter();
    if clustered {
        health.set_not_serving::<CacheServer<CacheService>>().await;
    } else {
        health.set_serving::<CacheServer<CacheService>>().await;
    }
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let max_message = config.limits.max_value_size + MESSAGE_SLACK;
    let service = CacheService::new(
        store.clone(),
        metrics.clone(),
        info,
        cluster.clone(),
        stop_rx.clone(),
    );
    if let Some(listener) = redis {
        let resp_config = crate::resp::Config {
            limits: crate::resp::parse::Limits::for_values(config.limits.max_value_size),
            cluster_mode: config.redis_cluster_mode,
            port: listener.local_addr()?.port(),
            auth: security.auth.clone(),
        };
        tracing::info!(redis = %listener.local_addr()?, "redis port serving");
        // TLS and tokens as on the gRPC port.
        let (service, stop) = (service.clone(), stop_rx.clone());
        match security.tls.clone() {
            Some(tls) => {
                let connections = crate::security::tls::incoming(
                    incoming(listener),
                    tls,
                    security.metrics.clone(),
                );
                tokio::spawn(crate::resp::serve(connections, service, resp_config, stop));
            }
            None => {
                let connections = incoming(listener);
                tokio::spawn(crate::resp::serve(connections, service, resp_config, stop));
            }
        }
    }
    let cache = CacheServer::new(service)
        .max_decoding_message_size(max_message.max(16 << 20))
        .max_encoding_message_size(max_message.saturating_mul(MAX_BATCH));

    let peer = PeerServer::new(PeerService::new(store.clone(), cluster.clone()))
        .max_decoding_message_size(max_message.max(16 << 20));
    if let (true, Some(interval)) = (clustered, config.anti_entropy) {
        let anti_entropy = antientropy::AntiEntropyMetrics::default();
        metrics.register(anti_entropy.collectors());
        tokio::spawn(antientropy::run(
            store.clone(),
            cluster.clone(),
            anti_entropy,
            interval,
            stop_rx.clone(),
        ));
    }
    let (placed_tx, placed_rx) = watch::channel(cluster.view().epoch());
    let joining = tokio::spawn(join(
        Joining {
            store: store.clone(),
            cluster: cluster.clone(),
            metrics: metrics.clone(),
            stop: stop_rx.clone(),
            placed: placed_tx,
            ready: ready.clone(),
            health: health.clone(),
        },
        clustered,
        matches!(config.discovery, Discovery::Kubernetes { .. }),
    ));

    tokio::spawn({
        let ready = ready.clone();
        let cluster = cluster.clone();
        let drain_timeout = config.drain_timeout;
        async move {
            shutdown.await;
            tracing::info!("shutting down: not ready, handing entries off");
            // A join still under way must not turn the node ready behind the drain.
            joining.abort();
            let _ = joining.await;
            ready.store(false, Ordering::Relaxed);
            health.set_not_serving::<CacheServer<CacheService>>().await;
            drain(&cluster, placed_rx, drain_timeout).await;
            let _ = stop_tx.send(true);
        }
    });
    tokio::spawn(sweep_expired(store.clone(), stop_rx.clone()));
    if config.memory_guard {
        tokio::spawn(crate::memory::guard(store, stop_rx.clone()));
    }

    tracing::info!(
        grpc = %grpc.local_addr()?,
        admin = %admin.local_addr()?,
        node_id = %config.node_id,
        max_memory = config.limits.max_memory,
        tls = security.tls.is_some(),
        mutual_tls = config.security.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        tokens = security.auth.is_some(),
        peer_tokens = security.peer_auth.is_some(),
        "kcache node serving"
    );
    if config.security.auth_accepts_anonymous {
        tracing::warn!(
            "--auth-accepts-anonymous: calls without a token are admitted (for the rollouts \
             that turn authentication on or off only); kcache_anonymous_requests_total counts them"
        );
    }
    // Health and reflection stay open (kubelet probes, tooling); Cache and Peer
    // demand a token when there are tokens (Peer a peer token when there are such),
    // and Peer, with mutual TLS and the peers' name, a node's certificate.
    let auth = security.auth.clone();
    let open = auth.is_none();
    let peer_name = security
        .tls
        .as_ref()
        .filter(|tls| tls.checks_peer_name())
        .and(config.security.peer_server_name.clone());
    let gate = PeerGate::new(auth.clone(), peer_name, security.metrics.clone()).with_peer_tokens(
        security.peer_auth.clone(),
        config.security.peer_accepts_app_tokens,
    );
    let routes = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_optional_service(open.then(|| cache.clone()))
        .add_optional_service(auth.map(|a| InterceptedService::new(cache, a)))
        .add_service(InterceptedService::new(peer, gate));
    let grpc_stop = stop_rx.clone();
    let grpc_server = async move {
        match security.tls.clone() {
            Some(tls) => {
                let connections =
                    crate::security::tls::incoming(incoming(grpc), tls, security.metrics.clone());
                routes
                    .serve_with_incoming_shutdown(connections, stopped(grpc_stop))
                    .await
            }
            None => {
                routes
                    .serve_with_incoming_shutdown(incoming(grpc), stopped(grpc_stop))
                    .await
            }
        }
    };
    let admin_server = async {
        axum::serve(admin, crate::admin::router(metrics, ready))
            .with_graceful_shutdown(stopped(stop_rx))
            .await
            .map_err(Error::Io)
    };
    let (grpc_result, admin_result) = tokio::join!(grpc_server, admin_server);
    grpc_result?;
    admin_result?;
    tracing::info!("stopped");
    Ok(())
}

/// What a node needs to join its cluster.
struct Joining {
    store: Arc<Store>,
    cluster: Arc<Cluster>,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
    placed: watch::Sender<u64>,
    ready: Arc<AtomicBool>,
    health: tonic_health::server::HealthReporter,
}

/// Starts the handoff loop, then, for a member of a cluster, fetches the entries it
/// owns from its peers and only then turns ready. A Kubernetes member first waits for
/// the membership it joins (the first EndpointSlice list), so that it places keys and
/// asks peers as the others will once it is an endpoint.
async fn join(joining: Joining, clustered: bool, learns_members: bool) {
    let Joining {
        store,
        cluster,
        metrics,
        stop,
        placed,
        ready,
        health,
    } = joining;
    let started = Instant::now();
    if learns_members {
        let mut reports = cluster.subscribe();
        let learned = tokio::time::timeout(SYNC_TIMEOUT, reports.changed()).await;
        if learned.is_err() {
            tracing::warn!(?SYNC_TIMEOUT, "no membership reported yet; joining alone");
        }
    }
    tokio::spawn(rebalance::run(
        store.clone(),
        cluster.clone(),
        metrics,
        stop,
        placed,
    ));
    if clustered {
        let left = SYNC_TIMEOUT.saturating_sub(started.elapsed());
        let synced = tokio::time::timeout(left, rebalance::sync_from_peers(&store, &cluster)).await;
        tracing::info!(
            entries = ?synced.ok(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "synced from peers; ready"
        );
    }
    ready.store(true, Ordering::Relaxed);
    health.set_serving::<CacheServer<CacheService>>().await;
}

/// Starts the membership source the config names and returns the cluster on it.
async fn start_membership(
    config: &NodeConfig,
    me: Member,
    grpc_port: u16,
) -> Result<Cluster, Error> {
    let (replication, ack) = (config.replication, config.write_ack);
    Ok(match &config.discovery {
        Discovery::None => Cluster::single(me),
        Discovery::Static(members) => {
            let (tx, rx) = membership::fixed(members.clone());
            // The list never changes; the sender lives as long as the process.
            std::mem::forget(tx);
            Cluster::new(me, replication, ack, rx)
        }
        Discovery::Watch(rx) => Cluster::new(me, replication, ack, rx.clone()),
        Discovery::Kubernetes { service, namespace } => {
            let client = kube::Client::try_default().await?;
            let (tx, rx) = watch::channel(Arc::new(View::default()));
            let (service, namespace) = (service.clone(), namespace.clone());
            tokio::spawn(async move {
                kubernetes::watch_members(client, &namespace, &service, grpc_port, tx).await;
            });
            Cluster::new(me, replication, ack, rx)
        }
    })
}

/// Places keys without this node and waits until a handoff pass over that placement
/// has finished, or `timeout`.
async fn drain(cluster: &Cluster, mut placed: watch::Receiver<u64>, timeout: Duration) {
    if cluster.is_single() {
        return;
    }
    cluster.start_draining();
    let started = Instant::now();
    let finished = tokio::time::timeout(
        timeout,
        placed.wait_for(|&epoch| epoch == cluster.view().epoch()),
    )
    .await;
    match finished {
        Ok(_) => tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "drained"),
        Err(_) => tracing::warn!(
            ?timeout,
            "drain timed out; exiting with entries not handed off"
        ),
    }
}

/// Accepted connections with Nagle's algorithm off (small replies must not wait for
/// the peer's delayed ACK, which costs 40 ms a round trip) and TCP keepalive on, so
/// connections of vanished clients are noticed.
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)))
}

/// Resolves once the node is told to stop.
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|&stopped| stopped).await;
}

async fn sweep_expired(store: Arc<Store>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                store.sweep_expired(SWEEP_BUDGET);
            }
            _ = stop.changed() => return,
        }
    }
}
