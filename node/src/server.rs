//! Wiring: one store, the gRPC server (Cache, health, reflection v1 and v1alpha), the
//! admin HTTP server and the expiry sweeper, all stopped by one shutdown future.
//! Takes already-bound listeners so tests can bind 127.0.0.1:0.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kcache_client::proto::{self, cache_server::CacheServer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::service::{CacheService, MAX_BATCH, NodeInfo};
use crate::store::{Limits, Store};

/// How often the active-expiry sweep runs, and how many slots per shard it examines
/// each time: about 160,000 slots a second, a pass over a million entries in seconds,
/// at well under a millisecond of one core per run.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
const SWEEP_BUDGET: usize = 256;
/// Room for the protobuf framing around the values of one request.
const MESSAGE_SLACK: usize = 64 << 10;

/// What a node is.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: String,
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Serves until `shutdown` completes, then turns not-ready, stops accepting, lets
/// in-flight requests finish and returns.
pub async fn serve(
    config: NodeConfig,
    grpc: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let store = Arc::new(Store::new(config.limits.clone()));
    let metrics = Metrics::new(store.clone());
    let info = NodeInfo {
        node_id: config.node_id.clone(),
        address: grpc.local_addr()?.to_string(),
        started: Instant::now(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(true));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<CacheServer<CacheService>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let max_message = config.limits.max_value_size + MESSAGE_SLACK;
    let cache = CacheServer::new(CacheService::new(
        store.clone(),
        metrics.clone(),
        info,
        stop_rx.clone(),
    ))
    .max_decoding_message_size(max_message.max(16 << 20))
    .max_encoding_message_size(max_message.saturating_mul(MAX_BATCH));

    tokio::spawn({
        let ready = ready.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: not ready, finishing in-flight requests");
            ready.store(false, Ordering::Relaxed);
            health.set_not_serving::<CacheServer<CacheService>>().await;
            let _ = stop_tx.send(true);
        }
    });
    tokio::spawn(sweep_expired(store, stop_rx.clone()));

    tracing::info!(
        grpc = %grpc.local_addr()?,
        admin = %admin.local_addr()?,
        node_id = %config.node_id,
        max_memory = config.limits.max_memory,
        "kcache node serving"
    );
    let grpc_server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(cache)
        .serve_with_incoming_shutdown(incoming(grpc), stopped(stop_rx.clone()));
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
