//! The Redis-protocol port: RESP2 and RESP3 on a second listener, served by the same
//! [`CacheService`] as gRPC, so forwarding to owners, replication and read-through
//! are the same for both protocols.
//!
//! Layers, as mini-redis names them: [`serve`] accepts connections → a connection
//! reads bytes and writes replies ([`connection`]) → [`parse`] takes commands off the
//! read buffer → [`exec`] runs each on the service → [`reply`] encodes the answer.
//! [`commands`] is the table of names and arities that `COMMAND` reports.

mod cluster;
mod commands;
mod connection;
mod exec;
mod info;
pub mod parse;
pub mod reply;

use std::borrow::Borrow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::security::Authenticator;
use crate::service::CacheService;

/// Most connections served at once, as Redis's default `maxclients`: each costs a
/// task and its buffers, so a flood of connections cannot take the node's memory.
pub const MAX_CONNECTIONS: usize = 10_000;

/// How the port presents the cluster to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ClusterMode {
    /// A plain Redis server: any key on any node (the node forwards to the owner);
    /// CLUSTER commands are refused as by a Redis without cluster support.
    #[default]
    Standalone,
    /// Also a Redis Cluster of one shard, this node, with every slot (see
    /// [`cluster`]): Redis Cluster clients connect, and plain clients still work.
    Emulated,
    /// A real Redis Cluster: CLUSTER SLOTS/SHARDS/NODES report which member is the
    /// primary (and which the replicas) of each slot, and a key sent to another
    /// member gets MOVED (see [`cluster`]), so cluster clients go straight to owners.
    /// Plain clients then get MOVED too.
    Cluster,
}

/// What the port needs beyond the service.
#[derive(Debug, Clone)]
pub struct Config {
    pub limits: parse::Limits,
    pub cluster_mode: ClusterMode,
    /// The port clients reach this listener at (INFO reports it).
    pub port: u16,
    /// The node's tokens (`--auth-token-file`): then a connection must AUTH with one
    /// before anything but AUTH, HELLO … AUTH and QUIT.
    pub auth: Option<Authenticator>,
}

/// Counters INFO reports.
#[derive(Debug, Default)]
struct Counters {
    connected: AtomicU64,
    connections_total: AtomicU64,
    rejected: AtomicU64,
    commands: AtomicU64,
    next_client_id: AtomicU64,
}

/// What every connection shares.
#[derive(Debug)]
struct Shared {
    service: CacheService,
    config: Config,
    counters: Counters,
}

/// Serves the connections of `incoming` (plain TCP, or TLS once its handshake is
/// done) until `stop` turns true, then closes them all (a command in flight gets its
/// reply first).
pub async fn serve<S, I>(
    incoming: I,
    service: CacheService,
    config: Config,
    stop: watch::Receiver<bool>,
) where
    S: AsyncRead
        + AsyncWrite
        + Connected<ConnectInfo: Borrow<TcpConnectInfo>>
        + Unpin
        + Send
        + 'static,
    I: Stream<Item = std::io::Result<S>>,
{
    let shared = Arc::new(Shared {
        service,
        config,
        counters: Counters::default(),
    });
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut stopping = stop.clone();
    let mut incoming = std::pin::pin!(incoming);
    loop {
        let accepted = tokio::select! {
            accepted = incoming.next() => accepted,
            _ = stopping.wait_for(|&s| s) => return,
        };
        let socket = match accepted {
            Some(Ok(socket)) => socket,
            Some(Err(err)) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(%err, "redis port: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            None => return,
        };
        let counters = &shared.counters;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            counters.rejected.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(connection::refuse(socket));
            continue;
        };
        counters.connections_total.fetch_add(1, Ordering::Relaxed);
        counters.connected.fetch_add(1, Ordering::Relaxed);
        let id = counters.next_client_id.fetch_add(1, Ordering::Relaxed) + 1;
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(err) = connection::run(socket, id, &shared, stop).await {
                tracing::debug!(%err, "redis connection ended");
            }
            shared.counters.connected.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}
